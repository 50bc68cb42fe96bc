"""tickline's benchmarks: ``python -m bench.<name>`` (bench/README.md says what each measures and how it reports)."""
