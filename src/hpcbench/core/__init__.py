"""The run core: the command line, the config parsed into a typed plan of the run, the runner
(join the world, open the run, measure, record the end), its per-process context, resume and
progress, and `hpcbench.testing` for plugin authors' tests."""
