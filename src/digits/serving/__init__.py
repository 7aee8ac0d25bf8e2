"""Serving: the draw-a-digit page and REST API (`app`), the process around it (`process`), the worker processes that
prepare pictures (`workers`, and what each runs: `worker_process`), the limits on what a request may cost
(`limits`) and uvicorn's HTTP protocol held to them (`protocol`).

May import: `digits.inference`, `digits.pictures` and the stages below them; never training or evaluation code
paths at request time.
"""
