"""The live server: Open Inference Protocol front end, deadline scheduler, worker processes (see README.md).

Import from the modules: `app` (InferenceServer, ServerConfig, run_server), `scheduler` (Engine, Scheduler),
`worker` (WorkerPool, ModelRunner), `protocol` (the OIP codec), `metrics`, `commands` (`tailor serve`).
Nothing is imported here, so `import tailor.serve` does not pull in Starlette or uvicorn.
"""
