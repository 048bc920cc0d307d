from rest_framework import serializers

from hub_server.accounts.models import ApiToken


class ApiTokenSerializer(serializers.ModelSerializer):
    organisation = serializers.SlugRelatedField(
        slug_field="name",
        read_only=True,
        help_text="the only organisation this token may upload and publish to; null: any of yours",
    )

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "scope",
            "prefix",
            "organisation",
            "created_at",
            "expires_at",
            "last_used_at",
        ]
        read_only_fields = ["id", "prefix", "created_at", "last_used_at"]
        extra_kwargs = {
            "expires_at": {"help_text": "refused from then on; null or absent: never expires"},
            "last_used_at": {
                "help_text": "last authenticated use, recorded at most once a minute per token"
            },
        }


class ApiTokenRequestSerializer(ApiTokenSerializer):
    """A create: the name, scope, optional expiry and optional organisation (by name)."""

    organisation = serializers.CharField(
        max_length=100, required=False, allow_blank=True, allow_null=True
    )


class NewApiTokenSerializer(ApiTokenSerializer):
    """The answer to a create: the only time the secret is shown."""

    token = serializers.CharField(read_only=True)

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]
