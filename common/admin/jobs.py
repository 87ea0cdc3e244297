"""Operations → Job runs: heartbeats, closes, rebuilds, imports, with their progress and outcome (view only)."""

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from ..models import JobRun


@admin.register(JobRun)
class JobRunAdmin(admin.ModelAdmin):
    """Job runs are written by the jobs themselves: shown read-only (``has_change_permission`` is false, viewing
    needs the view permission); old runs may be deleted."""

    list_display = ("id", "kind", "status", "trigger", "progress", "created_at", "started_at", "duration",
                    "short_message")
    list_filter = ("status", "kind", "trigger")
    search_fields = ("kind", "message")
    date_hierarchy = "created_at"
    list_select_related = ("requested_by",)
    readonly_fields = ("kind", "status", "trigger", "params", "requested_by", "created_at", "started_at",
                       "finished_at", "progress", "progress_done", "progress_total", "message", "result")
    change_form_template = "admin/common/jobrun/change_form.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: JobRun | None = None) -> bool:
        return False

    @admin.display(description="Progress")
    def progress(self, obj: JobRun) -> str:
        percent = obj.percent
        if percent is None:
            return f"{obj.progress_done:,}" if obj.progress_done else "—"
        return format_html(
            '<progress value="{}" max="100" style="width:8em"></progress> {}% ({} / {})',
            percent, percent, f"{obj.progress_done:,}", f"{obj.progress_total:,}",
        )

    @admin.display(description="Message")
    def short_message(self, obj: JobRun) -> str:
        return (obj.message[:80] + "…") if len(obj.message) > 80 else obj.message
