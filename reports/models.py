"""The reports have no rows of their own: each report page is an unmanaged model (no table) so
that it has a view permission an admin can grant (the "Support" group has them all) and a
place in the admin's sections. The numbers are read by reports.selectors."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class ReportPage(models.Model):
    class Meta:
        abstract = True
        managed = False
        default_permissions = ("view",)

    def __str__(self) -> str:
        return str(self._meta.verbose_name_plural)


class OverviewReport(ReportPage):
    class Meta(ReportPage.Meta):
        verbose_name = _("overview")
        verbose_name_plural = _("overview")


class MissedHoursReport(ReportPage):
    class Meta(ReportPage.Meta):
        verbose_name = _("missed calls by hour")
        verbose_name_plural = _("missed calls by hour")


class NotReturnedReport(ReportPage):
    class Meta(ReportPage.Meta):
        verbose_name = _("missed calls not returned")
        verbose_name_plural = _("missed calls not returned")


class CallbackReport(ReportPage):
    class Meta(ReportPage.Meta):
        verbose_name = _("callbacks")
        verbose_name_plural = _("callbacks")


class TeamReport(ReportPage):
    class Meta(ReportPage.Meta):
        verbose_name = _("agents and lines")
        verbose_name_plural = _("agents and lines")
