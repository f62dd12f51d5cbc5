"""The prediction service of a deployment: one worker process serving one model version over HTTP.

    worker.py   ``python -m mlspec.serve.worker --config CONFIG.json (--fd N | --host H --port P)``: loads
                the model, then serves on uvicorn (uvloop + httptools) until SIGTERM drains it
    app.py      ``make_app(config, model=None)``: the ASGI application (``POST /predict`` and the Open
                Inference Protocol v2 REST endpoints), a thin layer with orjson and no framework
    model.py    the model, its signature and the decoding of request rows into numpy columns
    reqlog.py   the request log: inputs and predictions written in segments to the artifact store,
                and ``read_requests`` for monitors

Nothing here imports the mlspec CLI, Hydra, OmegaConf or jsonschema: a worker imports what serving needs.
See docs/serving.md.
"""
