"""Solutions for notebook 10_your_own_data."""


def linear_scaling(base_lr, base_batch, batch_per_process, processes):
    """Exercise 1: the effective batch is batch_per_process × processes; scale the learning rate with it."""
    return base_lr * batch_per_process * processes / base_batch
