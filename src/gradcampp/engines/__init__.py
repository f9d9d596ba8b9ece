"""Where an explain run executes: in this process (``local``) or on a Ray cluster (``ray_engine``).

Both engines do the same per-image work (``work``), plan and finish a run the same way
(``outputs``) and write the same files, so a run's outputs do not depend on the engine.
"""
