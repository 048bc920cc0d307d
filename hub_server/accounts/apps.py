from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "hub_server.accounts"
    label = "accounts"
    verbose_name = "Organisations and API tokens"
