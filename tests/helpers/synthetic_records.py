"""Settings shaped like a resolved config's, for the synthetic run records of the table, plot and
robustness tests, and records written from them (no TensorFlow)."""

import copy

from experiments import records

EPSILON = {"fgm": 0.5, "gp": 1.0}


def settings(task, method, seed, model="bert_base", **changes):
    """Settings shaped like a resolved config's; ``changes`` maps dotted keys to new values."""
    s = {
        "task": {"name": task, "num_labels": 15 if task == "tnews" else 119, "max_train_samples": None},
        "method": {"_target_": f"experiments.train.methods.{method}", "name": method},
        "model": {"name": model, "learning_rate": 2e-5},
        "trainer": {"epochs": 10 if task == "tnews" else 50, "batch_size": 32, "learning_rate": 2e-5},
        "seed": seed,
    }
    if method in EPSILON:
        s["method"]["epsilon"] = EPSILON[method]
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = s
        for p in parents:
            node = node[p]
        node[last] = value
    return s


def write(results, task, method, seed, best, final=None, status="complete", **changes):
    """A run record of these settings with best dev accuracy ``best``, as make table reads it."""
    s = settings(task, method, seed, **changes)
    record = {
        "status": status,
        "task": task,
        "model": s["model"]["name"],
        "method": method,
        "seed": seed,
        "settings_id": records.settings_id(s),
        "best_dev_acc": best,
        "final_dev_acc": best - 0.01 if final is None else final,
        "history": [],
        "settings": copy.deepcopy(s),
        "config": s,
    }
    records.write_json_atomic(records.record_path(results, s), record)
