"""Every invoice line names the subscription it bills (so far always its invoice's), then the column is required.
Separate from the schema change before it: PostgreSQL refuses to alter a table with pending trigger events."""

from django.db import migrations, models


def lines_of_their_invoice_subscription(apps, schema_editor):
    line = apps.get_model("invoicing", "InvoiceLine")
    invoice = apps.get_model("invoicing", "Invoice")
    line.objects.filter(subscription__isnull=True).update(
        subscription_id=models.Subquery(
            invoice.objects.filter(pk=models.OuterRef("invoice_id")).values("subscription_id")[:1]
        )
    )


class Migration(migrations.Migration):
    dependencies = [("invoicing", "0005_credit_notes_and_rerating")]

    operations = [
        migrations.RunPython(lines_of_their_invoice_subscription, migrations.RunPython.noop),
    ]
