"""attnzoo on NVIDIA Triton Inference Server: a generated model repository, one Python-backend
model per variant, answering the same v2 contract as ``attnzoo serve``'s Open Inference Protocol door.

    model_config.py  config.pbtxt: the v2 contract as Triton's model configuration, and the
                     parameters the backend reads from it
    repository.py    the writer: one model per variant (config, checkpoint, architecture, model.py)
    stub_model.py    the file each model's ``1/model.py`` is a copy of: enters the environment that
                     has torch and attnzoo, then delegates to backend.py
    backend.py       inside Triton's Python backend: load and verify the variant, then decode →
                     engine → v2 outputs for each batch Triton forms
    cli.py           ``attnzoo triton-repo``
"""
