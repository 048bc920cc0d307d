from django.core.management.base import BaseCommand, CommandError

from hub_server.accounts import services
from hub_server.accounts.models import ApiToken


class Command(BaseCommand):
    help = (
        "Print a new API token for USER (created when missing), making USER a member of --org "
        "(created when missing)."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--org", help="organisation the user publishes for")
        parser.add_argument("--write", action="store_true", help="a write token (to upload)")
        parser.add_argument("--name", default="created by manage.py create_token")
        parser.add_argument("--email", default="")

    def handle(self, *args, username, org=None, write=False, name="", email="", **options):
        user = services.get_or_create_user(username, email=email)
        try:
            if org:
                organisation = services.create_organisation(org)
                has_owner = organisation.membership_set.filter(role="owner").exists()
                services.add_member(organisation, user, role="member" if has_owner else "owner")
            scope = ApiToken.Scope.WRITE if write else ApiToken.Scope.READ
            _, secret = services.create_token(user, name=name, scope=scope)
        except services.AccountError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(secret)
