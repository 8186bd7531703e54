"""Benchmarks of chat-worker (`make bench`, `python -m bench --help`): what orchestration costs on the real
model, how full an inference stand-in stays under a backlog, how a burst drains, how fast context is built.

Not tests: nothing here asserts. Each run prints a table and writes it as JSON to bench/results/."""
