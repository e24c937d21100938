"""ferry's database: the engine (:mod:`.db`), its tables (:mod:`.models`, upgraded by
:mod:`.schema` through Alembic), the records' repositories (:mod:`.repository`) and TaskFlow's
logbook backend on the same database (:mod:`.taskflow_backend`). Imports nothing above the model."""
