"""Offline COCO evaluation behind ``attnzoo eval``: accuracy (pycocotools), speed and memory
measured the way mmdet measured the published table, resumable and shardable with torchrun.

Modules: ``coco_data`` (layout + image list), ``detections_log`` (append-only JSONL),
``coco_metrics`` (COCOeval wrapper), ``speed`` (fps from per-image timings), ``report``
(table.json, table.md, plot), ``job`` (orchestration: :func:`~model_zoo.evaluation.job.run_eval`).
Where the model runs: ``local_model`` (a detector in this process; ``timing`` takes its time and
memory; ``sharding`` splits the images over torchrun's processes) or ``endpoint`` (a live service
instead: ``attnzoo eval --endpoint URL``), whose protocols are ``transport`` (what they share),
``attnzoo_http`` (``POST /detect``) and ``oip_v2`` (the Open Inference Protocol).
"""
