"""hydra/launcher=ray: Hydra's Ray launcher with one job per GPU, a process per job and stop signals
passed on to the jobs (what and why: shunted_lab/sweeps/ray_jobs.py). Here because Hydra takes
launchers from the hydra_plugins package only. Hydra imports this module on every start: Ray is
imported when a sweep launches, and without the extra (`pip install -e ".[ray]"`) nothing is defined."""

import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from omegaconf import OmegaConf, open_dict

log = logging.getLogger(__name__)

try:
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as HydraRayLauncher
except ImportError:  # run.py names the install command (config.missing_extra)
    HydraRayLauncher = None

if HydraRayLauncher is not None:

    class RayLauncher(HydraRayLauncher):
        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            import ray
            from hydra_plugins.hydra_ray_launcher._launcher_util import launch_job_on_ray, start_ray

            from shunted_lab.sweeps.ray_jobs import job_resources, wait_for_jobs

            setup_globals()
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
            start_ray(self.ray_cfg.init)
            remote = job_resources(OmegaConf.to_container(self.ray_cfg.remote, resolve=True), ray.cluster_resources())
            log.info("Ray: %d jobs, each with %s", len(job_overrides), remote)
            jobs = []
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
                sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                with open_dict(sweep_config):
                    sweep_config.hydra.job.id = f"ray_{idx}"
                    sweep_config.hydra.job.num = idx
                state = Singleton.get_state()
                ref = launch_job_on_ray(
                    self.hydra_context, OmegaConf.create(remote), sweep_config, self.task_function, state
                )
                jobs.append((ref, list(overrides)))
            return wait_for_jobs(jobs)
