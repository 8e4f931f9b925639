"""lmms-eval's index of its built-in tasks, kept in the user cache.

lmms-eval's `TaskManager` indexes its built-in tasks by parsing every task YAML file in its
tree (1,927 files, 1,985 tasks, groups and tags in lmms-eval 0.7, with PyYAML's pure-Python
loader) each time a process needs one: 2.6 s of CPU here, in every process that evaluates
a built-in suite or checks where its data lies. The index depends on those files only, so it
is kept as JSON in the user cache (`paths.memo_json`) under a digest of lmms-eval's version
and every YAML file's path, size and modification time, and rebuilt when any of them
changes. The tasks on the include path (the shapes tasks) are indexed afresh every time.
"""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path

from harness.fingerprint import digest
from harness.paths import memo_json

SKIPPED = ("__pycache__", ".ipynb_checkpoints")  # as lmms-eval's own walk skips them


def _key(tasks_dir: Path) -> str:
    stamps = []
    for root, dirs, files in os.walk(tasks_dir):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED)
        for f in sorted(files):
            if f.endswith(".yaml"):
                st = os.stat(os.path.join(root, f))
                stamps.append([os.path.join(root, f), st.st_size, st.st_mtime_ns])
    return digest([version("lmms_eval"), stamps])


def manager(include_path: str, include_defaults: bool):
    """lmms-eval's `TaskManager` over `include_path` and, with `include_defaults`, the
    built-in tasks, whose index comes from the user cache when it is current."""
    import lmms_eval.tasks
    from lmms_eval.tasks import TaskManager

    builtin_dir = os.path.dirname(os.path.abspath(lmms_eval.tasks.__file__)) + "/"

    class CachedTaskManager(TaskManager):
        def initialize_tasks(self, include_path=None, include_defaults=True):
            index = super().initialize_tasks(include_path, include_defaults=False)
            if not include_defaults:
                return index
            builtin = memo_json("lmms-eval-tasks", _key(Path(builtin_dir)),
                                lambda: self._get_task_and_group(builtin_dir),
                                valid=lambda v: isinstance(v, dict) and bool(v))
            return {**index, **builtin}  # as lmms-eval merges them: built-ins win

    return CachedTaskManager("WARNING", include_path=include_path,
                             include_defaults=include_defaults)
