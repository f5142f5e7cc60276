"""The ``pipes`` data-preparation engines: each stage as a Spark job launched through Dagster Pipes.

The assets of ``data_prep.py`` are unchanged: they call the ``prep_engine`` resource as with the in-process
engines. :class:`PipesSparkEngine` turns each call into one job of :mod:`recsys_assets.spark.pipes_job`
(the same Spark code as the ``spark`` engine, :mod:`recsys_assets.spark.runner`), launched by a launcher
resource:

* :class:`EmrServerlessLauncher` (``RECSYS_ENGINE=emr-serverless``): dagster-aws's
  ``PipesEMRServerlessClient`` starts the job on an EMR Serverless application; the context goes in as driver
  environment variables, logs and messages come back through CloudWatch.
* :class:`SubprocessLauncher` (``RECSYS_ENGINE=spark-subprocess``): Dagster's ``PipesSubprocessClient`` runs
  the job in a local process with its own Spark (local mode or any master): the JVM's memory is outside the
  run's process, and it is how the EMR entry point is tested on one machine.

The job writes each output partition into the IO manager's store at the IO manager's key (both are looked up
from the running asset, not configured twice) and reports a manifest version per output; the asset then
yields a :class:`~recsys_assets.storage.StoredPartition` and the IO manager checks that the store holds that
version instead of writing. The job's statistics and check verdicts come back as one Pipes custom message.
"""

from __future__ import annotations

import sys
import typing

import dagster as dg

from .engine import SparkJobEngine


class PipesLauncher(dg.ConfigurableResource):
    """Interface: ``launch(context, extras)`` runs the job entry point with ``extras`` through a Pipes client
    and returns its completed invocation."""

    def launch(
        self, context: dg.AssetExecutionContext, extras: dict[str, typing.Any], name: str
    ) -> dg.PipesClientCompletedInvocation:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class SubprocessLauncher(PipesLauncher):
    """The job in a local subprocess (``python -m recsys_assets.spark.pipes_job``) with its own Spark."""

    spark_conf: dict[str, str] = {"spark.master": "local[*]"}
    """Spark settings of the job's session (``spark.master``, memory, ...)."""
    python: str = ""
    """The interpreter (default: this one)."""

    def launch(self, context, extras, name) -> dg.PipesClientCompletedInvocation:
        extras = {**extras, "spark_conf": {**self.spark_conf, **extras.get("spark_conf", {})}}
        command = [self.python or sys.executable, "-m", "recsys_assets.spark.pipes_job"]
        return dg.PipesSubprocessClient().run(context=context, command=command, extras=extras)

    def describe(self) -> str:
        return f"subprocess, {self.spark_conf.get('spark.master', 'default master')}"


class EmrServerlessLauncher(PipesLauncher):
    """The job on an EMR Serverless application (dagster-aws ``PipesEMRServerlessClient``).

    The application's image (or ``--archives`` venv) must hold this package with pyspark's dependencies and
    ``dagster-pipes``; ``entry_point`` is ``recsys_assets/spark/pipes_job.py`` of that installed package
    (``local:///...``) or a copy on S3. Every job asks for CloudWatch logging to ``log_group`` (its
    ``configurationOverrides``): Pipes reads the job's messages from the driver's stdout there.
    The job's IAM role needs read access to the inputs and write access to the storage prefix."""

    application_id: str
    execution_role_arn: str
    entry_point: str
    spark_submit_parameters: str = ""
    """Extra ``spark-submit`` parameters (``--conf spark.executor.memory=8g``, ``--archives ...``)."""
    region_name: typing.Optional[str] = None
    endpoint_url: typing.Optional[str] = None
    """An EMR Serverless endpoint other than AWS's (tests: a moto server); CloudWatch Logs uses the same."""
    poll_interval_s: float = 10.0
    cloudwatch_logging: bool = True
    """Ask for CloudWatch logging on every job (Pipes reads the job's messages there); off only where the
    application's own configuration enables it."""
    log_group: str = "/aws/emr-serverless"
    """The CloudWatch log group the job logs to; Pipes reads the job's messages from its driver stdout there."""

    def _client(self, service: str):
        import boto3

        return boto3.client(service, region_name=self.region_name, endpoint_url=self.endpoint_url)

    def start_params(self, name: str) -> dict[str, typing.Any]:
        """The ``StartJobRun`` request (Pipes adds its context as driver environment variables and tags)."""
        params: dict[str, typing.Any] = {
            "applicationId": self.application_id,
            "executionRoleArn": self.execution_role_arn,
            "name": name,
            "jobDriver": {
                "sparkSubmit": {"entryPoint": self.entry_point, "sparkSubmitParameters": self.spark_submit_parameters}
            },
        }
        if self.cloudwatch_logging:  # Pipes reads the job's messages from CloudWatch
            logging = {"enabled": True, "logGroupName": self.log_group}
            params["configurationOverrides"] = {"monitoringConfiguration": {"cloudWatchLoggingConfiguration": logging}}
        return params

    def launch(self, context, extras, name) -> dg.PipesClientCompletedInvocation:
        from dagster_aws.pipes import PipesCloudWatchMessageReader, PipesEMRServerlessClient

        client = PipesEMRServerlessClient(
            client=self._client("emr-serverless"),
            message_reader=PipesCloudWatchMessageReader(client=self._client("logs")),
            poll_interval=self.poll_interval_s,
        )
        return client.run(context=context, start_job_run_params=self.start_params(name), extras=extras)

    def describe(self) -> str:
        return f"EMR Serverless application {self.application_id}"


class PipesSparkEngine(SparkJobEngine):
    """Each stage as one Spark job launched through Dagster Pipes by ``launcher`` (see the module)."""

    launcher: PipesLauncher

    def describe(self) -> str:
        return f"spark job via Dagster Pipes ({self.launcher.describe()})"

    def _execute(self, context, extras, name):
        invocation = self.launcher.launch(context, extras, name=name)
        launch = tuple((k, str(getattr(v, "value", v))) for k, v in invocation.metadata.items())
        return list(invocation.get_custom_messages()), launch
