"""``python manage.py create_api_token NAME --scope ingest [--scope read]``: prints the token last."""

from django.core.management.base import BaseCommand, CommandError

from metering.models import ApiToken
from metering.services.tokens import InvalidScope, api_token_create


class Command(BaseCommand):
    help = "Create an API token. The token is printed once, as the last line of output; only its hash is kept."

    def add_arguments(self, parser):
        parser.add_argument("name", help="What the token is for, e.g. 'kong-prod'.")
        parser.add_argument(
            "--scope", action="append", dest="scopes", required=True, choices=ApiToken.Scope.values,
            help="ingest (post events), read (read APIs), manage (write meters). Repeat for several.",
        )

    def handle(self, *args, name: str, scopes: list[str], **options):
        try:
            token, plain = api_token_create(name=name, scopes=scopes)
        except (InvalidScope, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Created API token '{token.name}' ({token.prefix}…) with scopes: {', '.join(token.scopes)}.")
        self.stdout.write("Store it now: it cannot be shown again.")
        self.stdout.write(plain)
