from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "serving"
    verbose_name = "Serving gateway"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_delete, post_save
        from django_fsm.signals import post_transition
        from knox.models import get_token_model

        from governance.models import Lifecycle, RoleGrant
        from registry.models import ArtifactPolicy

        from . import gateway, signals  # noqa: F401  (gateway registers itself with process)

        post_transition.connect(
            signals.lifecycle_changed, sender=Lifecycle, dispatch_uid="serving.lifecycle"
        )
        # Routes carry the model's artifact policy to the loader: a change reroutes at commit.
        post_save.connect(
            signals.artifact_policy_changed, sender=ArtifactPolicy, dispatch_uid="serving.policy+"
        )
        post_delete.connect(
            signals.artifact_policy_changed, sender=ArtifactPolicy, dispatch_uid="serving.policy-"
        )
        # Cached PREDICT decisions and token checks end when a grant, a token or a user changes.
        for sender, name in (
            (RoleGrant, "grant"),
            (get_token_model(), "token"),
            (get_user_model(), "user"),
        ):
            post_save.connect(
                signals.grants_changed, sender=sender, dispatch_uid=f"serving.{name}+"
            )
            post_delete.connect(
                signals.grants_changed, sender=sender, dispatch_uid=f"serving.{name}-"
            )
