"""``python manage.py create_api_token NAME --scope ingest [--scope read] [--rate-limit N]``: prints the token
last."""

from django.core.management.base import BaseCommand, CommandError

from metering.models import ApiToken
from metering.services.tokens import InvalidRateLimit, InvalidScope, api_token_create


class Command(BaseCommand):
    help = "Create an API token. The token is printed once, as the last line of output; only its hash is kept."

    def add_arguments(self, parser):
        parser.add_argument("name", help="What the token is for, e.g. 'kong-prod'.")
        parser.add_argument(
            "--scope", action="append", dest="scopes", required=True, choices=ApiToken.Scope.values,
            help="ingest (post events), read (read APIs), manage (write meters). Repeat for several.",
        )
        parser.add_argument(
            "--rate-limit", type=int, dest="rate_limit", default=None, metavar="N",
            help="At most N events a second may be posted with this token (429 beyond). Default: no limit.",
        )

    def handle(self, *args, name: str, scopes: list[str], rate_limit: int | None = None, **options):
        try:
            token, plain = api_token_create(name=name, scopes=scopes, ingest_rate_limit=rate_limit)
        except (InvalidScope, InvalidRateLimit, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        limit = f", at most {token.ingest_rate_limit:,} events/s" if token.ingest_rate_limit else ""
        self.stdout.write(f"Created API token '{token.name}' ({token.prefix}…) with scopes: "
                          f"{', '.join(token.scopes)}{limit}.")
        self.stdout.write("Store it now: it cannot be shown again.")
        self.stdout.write(plain)
