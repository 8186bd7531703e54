"""The fault suite (issue 12, marker `faults`): each row of the issue's probe table as a regression test on the
real Temporal dev server and the real llama.cpp server (SmolLM2), except where a FAKE engine is named. CI-sized by
default (part of `make test`); `make test-faults-full` (CHAT_WORKER_FAULTS=full) runs the issue's sizes. Sizes are
in tests/faults/scale.py; every wait is bounded by a guard timeout, and no test asserts a duration.

Probe → test (here unless a path is given):
- worker SIGKILL mid-generation, a new worker 5 s later → test_worker_restarts.py::
  test_a_killed_workers_generations_complete_on_a_new_worker
- Temporal dev server SIGTERM / SIGKILL / down 15 s (full: 60 s), restarted on its SQLite file →
  test_temporal_server.py::test_jobs_in_flight_survive_the_temporal_server_going_away[sigterm|sigkill|down]
- worker SIGTERM during generations (CI: 48-token replies; full: 10 jobs × 400 tokens) → test_worker_restarts.py::
  test_a_stopped_workers_generations_finish_in_its_grace_or_run_again
- engine down mid-run and restarted (CI: 15 s, 4 jobs; full: 8.6 s / 40 s / 3 min, 10 jobs) →
  tests/workflows/test_engine_outage.py::test_jobs_wait_out_an_engine_outage_and_all_complete (marker faults);
  engine down before submit, prepare's counting, several engines → that file, test_prepare_waits.py,
  test_engine_failover.py
- raw JSON that does not decode, other malformed jobs (hypothesis, through the client and as raw JSON) →
  tests/workflows/test_bad_inputs.py; a job the worker cannot decrypt → tests/orchestrator/test_privacy.py
- valid but heavy jobs (a heavy neighbour) → tests/workflows/test_heavy_prepare.py
- 200 jobs at once (CI: 30 jobs, 20 s deadline, 40 tokens) → test_burst.py
- duplicate job_id → tests/workflows/test_chat_workflow.py::test_same_job_id_runs_once and
  ::test_the_same_job_id_with_other_content_is_refused_naming_it
- a 429 storm and errors inside a 200 stream, from the FAKE engine (tests/fake_engine.py) → test_engine_errors.py
"""
