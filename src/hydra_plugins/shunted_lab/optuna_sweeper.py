"""hparams_search=optuna: Hydra's Optuna sweeper with its study in the sweep directory and its trials
matched to their jobs, so that the same command resumes a stopped search (what and why:
shunted_lab/sweeps/optuna_search.py). Here because Hydra takes sweepers from the hydra_plugins package
only; Hydra imports this module on every start, so Optuna is imported when a search starts."""

from hydra.plugins.sweeper import Sweeper


class ResumableOptunaSweeper(Sweeper):
    def __init__(self, **config) -> None:
        from shunted_lab.sweeps.optuna_search import ResumableSearch

        self.search = ResumableSearch(**config)

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.search.sweep(arguments)
