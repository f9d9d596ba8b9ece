"""The three stages of an explain run, with plain data between them.

- ``read`` (:mod:`gradcampp.stages.read`): input path -> the model's view of the image
  (``uint8 (H, W, 3)``), or the reason it is skipped; needs the preprocessing only.
- ``explain`` (:mod:`gradcampp.stages.explain`): a batch of views -> per view its class
  probabilities and maps (:class:`~gradcampp.stages.explain.ImageExplanation`), or the reason it
  failed; runs on the model's device and touches no file.
- ``write`` (:mod:`gradcampp.stages.write`): explanations -> each image's files, or its row of a
  Parquet part file (:mod:`gradcampp.parquet`), every file atomically; returns the records.

Each is a function of its inputs and the run's :class:`~gradcampp.stages.settings.Settings`. The
stages import no engine: an engine (``gradcampp.engines``) decides only where they run (a loop
in this process, or Ray workers) and finishes the run from the records they return.
"""
