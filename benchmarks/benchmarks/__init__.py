"""simcore's asv suite (``asv run`` from the repository root; see ``asv.conf.json``).

One module per layer of the package: ``bench_kernels`` (activations, losses, layers,
optimizers), ``bench_network`` (``MLP``, the perceptron, compile time), ``bench_grid``
(``train_grid`` on W1), ``bench_suite`` (the peers suite's workloads and both CPU strategies;
``make bench-compare BASE=REV``) and ``bench_cuda`` (skipped until a GPU backend exists). Shared data and
the base class live in ``common``.
"""
