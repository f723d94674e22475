"""Offline COCO evaluation behind ``attnzoo eval``: accuracy (pycocotools), speed and memory
measured the way mmdet measured the published table, resumable and shardable with torchrun.

Modules: ``coco_data`` (layout + image list), ``detections_log`` (append-only JSONL),
``coco_metrics`` (COCOeval wrapper), ``timing`` (model timing, fps, peak memory), ``report``
(table.json, table.md, plot), ``endpoint`` and ``oip_v2`` (a live service instead of a local model:
``attnzoo eval --endpoint URL``), ``job`` (orchestration: :func:`~model_zoo.evaluation.job.run_eval`).
"""
