"""The multi-task model (LMMoE), its baselines, training and tuning.

Modules, one concept each:

* :mod:`.preprocess` -- raw flow tensors to model features, inside the model;
* :mod:`.lmmoe` -- the LSTM multi-gate mixture-of-experts (and its fused form for export);
* :mod:`.single` -- the single-task LSTM baseline (the status quo);
* :mod:`.classical` -- per-flow statistics + gradient boosting baseline;
* :mod:`.arch` -- the architecture options a run shares between the LMMoE and its baselines;
* :mod:`.augment` -- training-time variants of flows as other networks and stacks would show them;
* :mod:`.training` -- joint and separate training paradigms, early stopping;
* :mod:`.experiment` -- one ``multa train`` run: dataset to stored model, baselines, report;
* :mod:`.loso` -- leave-one-source-out evaluation (``multa train --eval loso``);
* :mod:`.thresholds` -- open-set and notice thresholds picked out of source;
* :mod:`.experts` -- three ways to run the experts, timed by ``multa bench model --impl``;
* :mod:`.figures` -- the confusion-matrix plots of a report;
* :mod:`.metrics`, :mod:`.calibration` -- macro-F1, ECE, temperature scaling;
* :mod:`.speed` -- CPU throughput measurement shared by tune and ``multa bench model``;
* :mod:`.tune` -- the size search (``multa bench model`` lives in :mod:`multa_broker.bench.model`);
* :mod:`.reexport` -- a stored model written again with today's code (``multa train --reexport``);
* :mod:`.synthetic` -- tiny learnable datasets for tests.

Nothing here is imported by ``multa --help``; torch loads only when a model
command runs.
"""
