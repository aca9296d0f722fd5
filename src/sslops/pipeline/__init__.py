"""KFP adapters: components and the pipeline that call the stage functions, and local runs.

``sslops.pipeline.tasks`` holds the glue the component bodies call; it never imports
KFP. ``components`` and ``ssl_pipeline`` define the KFP objects; ``local`` runs the
pipeline through ``kfp.local``.
"""
