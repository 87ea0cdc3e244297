"""``python manage.py load_demo``: the seed tutorial's meter, feature, plan, customer, subscription, token."""

from django.core.management.base import BaseCommand

from invoicing.services.demo import demo_load, demo_token_file


class Command(BaseCommand):
    help = "Load the seed flow as demo data (idempotent: creates only what is missing)."

    def handle(self, *args, **options):
        created = demo_load()
        if created:
            for item in created:
                self.stdout.write(f"Demo data: created {item}")
        else:
            self.stdout.write("Demo data already loaded.")
        token_file = demo_token_file()
        if token_file.exists():
            self.stdout.write(f"Demo API token (ingest + read): {token_file.read_text().strip()}")
            self.stdout.write("Simulate the gateway: "
                              "python manage.py simulate_gateway --consumer kong-air --requests 6")
