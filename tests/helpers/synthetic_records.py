"""Settings shaped like a resolved config's, for the synthetic run records of the table, plot and
robustness tests (no TensorFlow)."""

EPSILON = {"fgm": 0.5, "gp": 1.0}


def settings(task, method, seed, model="bert_base", **changes):
    """Settings shaped like a resolved config's; ``changes`` maps dotted keys to new values."""
    s = {"task": {"name": task, "num_labels": 15 if task == "tnews" else 119, "max_train_samples": None},
         "method": {"_target_": f"experiments.train.methods.{method}", "name": method},
         "model": {"name": model, "learning_rate": 2e-5},
         "trainer": {"epochs": 10 if task == "tnews" else 50, "batch_size": 32, "learning_rate": 2e-5},
         "seed": seed}
    if method in EPSILON:
        s["method"]["epsilon"] = EPSILON[method]
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = s
        for p in parents:
            node = node[p]
        node[last] = value
    return s
