"""The cost table: what each model costs us per token type (filled by ``llm_prices import``; read by margins)."""

from __future__ import annotations

from django.contrib import admin

from ..models import ModelCost


@admin.register(ModelCost)
class ModelCostAdmin(admin.ModelAdmin):
    list_display = ("provider", "model", "token_type", "cost_per_token", "currency", "source", "updated_at")
    list_filter = ("provider", "token_type", "currency", "source")
    search_fields = ("provider", "model")
    ordering = ("provider", "model", "token_type")
    fields = ("provider", "model", "token_type", "cost_per_token", "currency", "source", "updated_at")
    readonly_fields = ("updated_at",)
