"""Scale-out: the table build and bulk validation as Apache Beam pipelines (docs/scale-out.md).

One implementation, two runners: the pipelines call the very functions the serverless functions
call (``shared.keyspace.score_keys``, ``shared.table.write_table``, ``shared.table_build``'s plan
and pointer switch, ``shared.validation.validate_file``, ``shared.quarantine.quarantine_object``,
``shared.monitoring.reference_stats``) from Beam ``DoFn``s; only the fan-out is Beam's.

Modules that import ``apache_beam`` (``table_pipeline``, ``validate_pipeline``) run only in the
Beam environment (``.venv-beam``, or a Dataflow worker). ``options``, ``decide`` and ``launch``
import no Beam at module level: the functions and the CLI use them to decide where work runs and
to start a pipeline (a DirectRunner subprocess, or a Dataflow Flex Template job).
"""
