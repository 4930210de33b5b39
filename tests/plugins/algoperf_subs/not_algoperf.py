"""Not an AlgoPerf submission: it has no update_params (optbench tests: one line, exit code 2)."""


def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    return {}
