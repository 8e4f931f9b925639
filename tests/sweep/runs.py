"""Reading a sweep's cell runs back from MLflow, for the sweep tests."""

from mlflow.tracking import MlflowClient

from harness.sweep.tracking import TAG_HASH, TAG_KIND, tracking_uri


def cell_runs(name: str = "smoke", status: str | None = None):
    client = MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name(name)
    flt = f"tags.`{TAG_KIND}` = 'cell'"
    if status:
        flt += f" and attributes.status = '{status}'"
    return client, client.search_runs([exp.experiment_id], filter_string=flt)


def metrics_by_hash(runs, times: bool = False) -> dict[str, dict[str, float]]:
    return {r.data.tags[TAG_HASH]: {k: v for k, v in r.data.metrics.items()
                                   if times or not k.startswith("time/")} for r in runs}
