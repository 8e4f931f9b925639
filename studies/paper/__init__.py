"""The paper study on shapes-llava (`make paper`, docs/REPRODUCTION.md): its grids are
experiments/paper/*.yaml; `probes` runs the outlier probe, `summary` writes the main figure
and the findings."""
