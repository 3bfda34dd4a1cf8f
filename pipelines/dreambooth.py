"""The DreamBooth pipeline: class images (parallel shards) -> fine-tuning -> evaluation of every kept step ->
export and register (the selected step) -> samples."""

from kfp import dsl

from inkbooth.cluster import ClusterConfig
from inkbooth.components.db_evaluate.component import evaluate_dreambooth
from inkbooth.components.db_export.component import export_model
from inkbooth.components.db_plan.component import plan_prior
from inkbooth.components.db_prior.component import generate_prior
from inkbooth.components.db_sample.component import sample_model
from inkbooth.components.db_train.component import train
from inkbooth.pipelines._steps import exit_task, imported_dataset, pinned_model


def build(cluster: ClusterConfig | None = None):
    """The pipeline with ``cluster``'s per-stage Kubernetes settings baked in."""
    cluster = cluster or ClusterConfig()

    @dsl.pipeline(name="inkbooth-dreambooth",
                  description="DreamBooth: prior images, fine-tuning, subject-fidelity evaluation, export to diffusers and "
                              "single-file, sampling",
                  pipeline_config=cluster.pipeline_config())
    def dreambooth_pipeline(
        base_model: str,
        instance_images: str,
        prior_output: str,
        registry: str,
        checkpoints: str = "",
        prior_shards: int = 2,
        prior_config: dict = {},  # noqa: B006 - KFP takes parameter defaults from literals
        train_config: dict = {},  # noqa: B006
        evaluate_config: dict = {},  # noqa: B006
        export_config: dict = {},  # noqa: B006
        sample_config: dict = {},  # noqa: B006
        s3_secret: str = "inkbooth-s3",
        kfp_api: str = cluster.kfp_api(),
        model_registries: list = cluster.registry_sinks(),  # noqa: B008 - the cluster file's, baked in
    ):
        finish = exit_task(cluster, kfp_api=kfp_api, checkpoints=checkpoints, clean_checkpoints=True,
                           s3_secret=s3_secret)
        with dsl.ExitHandler(finish, name="dreambooth-run"):
            # Inputs from outside the run, as artifacts for ML Metadata's lineage: the base model through
            # pin_model (a pointer with its fingerprint; a hub id cannot be imported), the subject images
            # imported where they are.
            pinned = pinned_model(cluster, base_model, s3_secret, "pin-base-model")
            subject = imported_dataset(instance_images, "subject images", "subject-images")
            plan = cluster.apply(plan_prior(num_shards=prior_shards), "plan_prior", s3_secret)
            plan.set_display_name("plan-prior-shards")
            with dsl.ParallelFor(items=plan.output, parallelism=cluster.prior.parallelism) as shard:
                prior = cluster.apply(generate_prior(base_model=pinned.outputs["base_model"], prior_output=prior_output, shard=shard,
                                                     config=prior_config), "prior", s3_secret)
                prior.set_display_name("class-images")
            trained = cluster.apply(train(base_model=pinned.outputs["base_model"], instance_images=subject.output,
                                          class_sets=dsl.Collected(prior.outputs["class_images"]), checkpoints=checkpoints,
                                          config=train_config, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER),
                                    "train", s3_secret)
            trained.set_display_name("fine-tune")
            judged = cluster.apply(evaluate_dreambooth(trained=trained.outputs["trained"], config=evaluate_config),
                                   "evaluate_dreambooth", s3_secret)
            judged.set_display_name("evaluate")
            exported = cluster.apply(export_model(trained=trained.outputs["trained"], evaluation=judged.outputs["evaluation"],
                                                  registry=registry,
                                                  config=export_config, model_registries=model_registries),
                                     "export_model", s3_secret)
            exported.set_display_name("export-and-register")
            sampled = cluster.apply(sample_model(model=exported.outputs["model"], config=sample_config), "sample", s3_secret)
            sampled.set_display_name("sample")

    return dreambooth_pipeline


dreambooth_pipeline = build()
