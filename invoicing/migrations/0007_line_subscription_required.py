import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("invoicing", "0006_lines_carry_their_subscription")]

    operations = [
        migrations.AlterField(
            model_name="invoiceline",
            name="subscription",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT, related_name="+", to="customers.subscription"
            ),
        ),
    ]
