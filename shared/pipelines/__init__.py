"""Scale-out: the table build and bulk validation as Apache Beam pipelines (docs/scale-out.md).

One implementation, two runners: the pipelines call the very functions the serverless functions
call (``shared.tables.keys.score_keys``, ``shared.tables.format.write_table``, ``shared.tables.build``'s plan
and pointer switch, ``shared.data.validation.validate_file``, ``shared.data.quarantine.quarantine_object``,
``shared.data.monitoring.reference_stats``) from Beam ``DoFn``s; only the fan-out is Beam's.

Modules that import ``apache_beam`` (``table_pipeline``, ``validate_pipeline``) run only in the
Beam environment (``.venv-beam``, or a Dataflow worker). ``options``, ``decide`` and ``launch``
import no Beam at module level: the functions and the CLI use them to decide where work runs and
to start a pipeline (a DirectRunner subprocess, or a Dataflow Flex Template job).
"""
