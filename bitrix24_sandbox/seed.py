"""Seed data of the sandbox portal: a small Polish company using Bitrix24 CRM.

IDs are fixed so tests and docs can rely on them. Phones are deliberately stored in the
different formats sales people really type, to exercise Bitrix24's phone matching:

    contact 12 Anna Kowalska        +48600111222          E.164
    contact 14 Piotr Nowicki        600 111 333           national (NOT found from +48600111333!)
    contact 15 Katarzyna Wiśniewska 0048 600-111-444      international trunk prefix
    contact 16 Michał Dąbrowski     +48 600-111 555       spaces and dashes (+ a HOME landline)
    contact 17 Iwan Pietrow         8 (912) 345-67-89     Russian trunk 8 (matches +79123456789)
    company 21 Kancelaria Lex       +48 22 123 45 67
    company 22 Hurtownia Bałtyk     +48 58 765 43 21
    lead 25 (NEW, CALL)             +48601222333
    lead 26 (IN_PROCESS, WEB)       +48 602 333 444
    lead 27 (CONVERTED)             +48600111222          same number as contact 12

Deals: 57 (General/PREPARATION, company 22), 63 (General/WON, contact 12), 68 (General/EXECUTING,
contact 17), 71 "Legal review" (Contracts/C1:NEGOTIATION, contact 12, responsible 5, the most
recently modified deal of Anna), 74 (Contracts/C1:WON), 76 (General/LOSE, contact 14).
"""

from __future__ import annotations

from typing import Any

DAY = 86400.0

USERS: list[dict[str, Any]] = [
    {
        "ID": 1,
        "NAME": "Jan",
        "LAST_NAME": "Admin",
        "EMAIL": "jan.admin@simtrix.example",
        "WORK_POSITION": "Administrator",
        "UF_DEPARTMENT": [1],
        "UF_PHONE_INNER": "100",
        "WORK_PHONE": "+48 22 100 00 01",
        "PERSONAL_MOBILE": "",
        "PERSONAL_GENDER": "M",
        "ADMIN": True,
        "ACTIVE": True,
        "TIMEMAN_STATUS": "OPENED",
    },
    {
        "ID": 3,
        "NAME": "Piotr",
        "LAST_NAME": "Wiśniewski",
        "EMAIL": "piotr.wisniewski@simtrix.example",
        "WORK_POSITION": "Support engineer",
        "UF_DEPARTMENT": [3],
        "UF_PHONE_INNER": "103",
        "WORK_PHONE": "+48 22 100 00 03",
        "PERSONAL_MOBILE": "+48 501 000 003",
        "PERSONAL_GENDER": "M",
        "ADMIN": False,
        "ACTIVE": True,
        "TIMEMAN_STATUS": "OPENED",
    },
    {
        "ID": 5,
        "NAME": "Marta",
        "LAST_NAME": "Nowak",
        "EMAIL": "marta.nowak@simtrix.example",
        "WORK_POSITION": "Sales manager",
        "UF_DEPARTMENT": [2],
        "UF_PHONE_INNER": "105",
        "WORK_PHONE": "+48 22 100 00 05",
        "PERSONAL_MOBILE": "+48501000005",
        "PERSONAL_GENDER": "F",
        "ADMIN": False,
        "ACTIVE": True,
        "TIMEMAN_STATUS": "OPENED",
    },
    {
        "ID": 7,
        "NAME": "Tomasz",
        "LAST_NAME": "Kamiński",
        "EMAIL": "tomasz.kaminski@simtrix.example",
        "WORK_POSITION": "Sales agent (left the company)",
        "UF_DEPARTMENT": [2],
        "UF_PHONE_INNER": "107",
        "WORK_PHONE": "",
        "PERSONAL_MOBILE": "+48 501 000 007",
        "PERSONAL_GENDER": "M",
        "ADMIN": False,
        "ACTIVE": False,
        "TIMEMAN_STATUS": "CLOSED",
    },
    {
        "ID": 9,
        "NAME": "Ewa",
        "LAST_NAME": "Lewandowska",
        "EMAIL": "ewa.lewandowska@simtrix.example",
        "WORK_POSITION": "Lawyer",
        "UF_DEPARTMENT": [4],
        "UF_PHONE_INNER": "109",
        "WORK_PHONE": "+48 22 100 00 09",
        "PERSONAL_MOBILE": "+48 501 000 009",
        "PERSONAL_GENDER": "F",
        "ADMIN": False,
        "ACTIVE": True,
        "TIMEMAN_STATUS": "PAUSED",
    },
    {
        "ID": 11,
        "NAME": "Krzysztof",
        "LAST_NAME": "Wójcik",
        "EMAIL": "krzysztof.wojcik@simtrix.example",
        "WORK_POSITION": "Support engineer",
        "UF_DEPARTMENT": [3],
        "UF_PHONE_INNER": "111",
        "WORK_PHONE": "",
        "PERSONAL_MOBILE": "+48 501 000 011",
        "PERSONAL_GENDER": "M",
        "ADMIN": False,
        "ACTIVE": True,
        "TIMEMAN_STATUS": "CLOSED",
    },
]

DEPARTMENTS: list[dict[str, Any]] = [
    {"ID": 1, "NAME": "SIMtrix Sp. z o.o.", "SORT": 500, "PARENT": None, "UF_HEAD": 1},
    {"ID": 2, "NAME": "Sales", "SORT": 500, "PARENT": 1, "UF_HEAD": 5},
    {"ID": 3, "NAME": "Support", "SORT": 500, "PARENT": 1, "UF_HEAD": 3},
    {"ID": 4, "NAME": "Legal", "SORT": 500, "PARENT": 1, "UF_HEAD": 9},
]

# (ENTITY_ID, STATUS_ID, NAME, SORT, SEMANTICS, COLOR); SEMANTICS None = in progress.
STATUSES: list[tuple[str, str, str, int, str | None, str]] = [
    ("STATUS", "NEW", "Unassigned", 10, None, "#39A8EF"),
    ("STATUS", "IN_PROCESS", "In Progress", 20, None, "#2FC6F6"),
    ("STATUS", "PROCESSED", "Processed", 30, None, "#55D0E0"),
    ("STATUS", "JUNK", "Junk Lead", 250, "F", "#FF5752"),
    ("STATUS", "CONVERTED", "Good Lead", 260, "S", "#7BD500"),
    ("SOURCE", "CALL", "Call", 10, None, ""),
    ("SOURCE", "EMAIL", "E-Mail", 20, None, ""),
    ("SOURCE", "WEB", "Website", 30, None, ""),
    ("SOURCE", "ADVERTISING", "Advertising", 40, None, ""),
    ("SOURCE", "PARTNER", "Existing client", 50, None, ""),
    ("SOURCE", "RECOMMENDATION", "By recommendation", 60, None, ""),
    ("SOURCE", "TRADE_SHOW", "Show/Exhibition", 70, None, ""),
    ("SOURCE", "WEBFORM", "CRM form", 80, None, ""),
    ("SOURCE", "CALLBACK", "Callback", 90, None, ""),
    ("SOURCE", "RC_GENERATOR", "Sales boost", 100, None, ""),
    ("SOURCE", "STORE", "Online store", 110, None, ""),
    ("SOURCE", "OTHER", "Other", 120, None, ""),
    ("DEAL_TYPE", "SALE", "Sales", 10, None, ""),
    ("DEAL_TYPE", "COMPLEX", "Integrated sale", 20, None, ""),
    ("DEAL_TYPE", "GOODS", "Merchandise sale", 30, None, ""),
    ("DEAL_TYPE", "SERVICES", "Service sale", 40, None, ""),
    ("DEAL_TYPE", "SERVICE", "After-sales service", 50, None, ""),
    ("CONTACT_TYPE", "CLIENT", "Clients", 10, None, ""),
    ("CONTACT_TYPE", "SUPPLIER", "Suppliers", 20, None, ""),
    ("CONTACT_TYPE", "PARTNER", "Partners", 30, None, ""),
    ("CONTACT_TYPE", "OTHER", "Other", 40, None, ""),
    ("COMPANY_TYPE", "CUSTOMER", "Client", 10, None, ""),
    ("COMPANY_TYPE", "SUPPLIER", "Supplier", 20, None, ""),
    ("COMPANY_TYPE", "COMPETITOR", "Competitor", 30, None, ""),
    ("COMPANY_TYPE", "PARTNER", "Partner", 40, None, ""),
    ("COMPANY_TYPE", "OTHER", "Other", 50, None, ""),
    ("DEAL_STAGE", "NEW", "New", 10, None, "#39A8EF"),
    ("DEAL_STAGE", "PREPARATION", "Document preparation", 20, None, "#2FC6F6"),
    ("DEAL_STAGE", "EXECUTING", "In progress", 30, None, "#55D0E0"),
    ("DEAL_STAGE", "WON", "Deal won", 60, "S", "#7BD500"),
    ("DEAL_STAGE", "LOSE", "Deal lost", 70, "F", "#FF5752"),
]

CONTRACTS_STAGES: list[tuple[str, str, str, int, str | None, str]] = [
    ("DEAL_STAGE_1", "C1:NEW", "New", 10, None, "#39A8EF"),
    ("DEAL_STAGE_1", "C1:NEGOTIATION", "Contract negotiation", 20, None, "#FFA900"),
    ("DEAL_STAGE_1", "C1:WON", "Contract signed", 60, "S", "#7BD500"),
    ("DEAL_STAGE_1", "C1:LOSE", "Lost", 70, "F", "#FF5752"),
]

# Minimal directories a portal has even without demo data (seed=False).
SYSTEM_ENTITY_IDS = {"STATUS", "SOURCE", "DEAL_TYPE", "CONTACT_TYPE", "COMPANY_TYPE", "DEAL_STAGE"}


def _phones(*values: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"VALUE_TYPE": vt, "VALUE": v} for vt, v in values]


CONTACTS: list[dict[str, Any]] = [
    {
        "ID": 12,
        "NAME": "Anna",
        "LAST_NAME": "Kowalska",
        "TYPE_ID": "CLIENT",
        "SOURCE_ID": "CALL",
        "ASSIGNED_BY_ID": 5,
        "COMPANY_ID": None,
        "POST": "Office manager",
        "PHONE": _phones(("WORK", "+48600111222")),
        "EMAIL": _phones(("WORK", "anna.kowalska@example.pl")),
        "_age": 40,
    },
    {
        "ID": 14,
        "NAME": "Piotr",
        "LAST_NAME": "Nowicki",
        "TYPE_ID": "CLIENT",
        "SOURCE_ID": "WEB",
        "ASSIGNED_BY_ID": 5,
        "PHONE": _phones(("MOBILE", "600 111 333")),
        "_age": 30,
    },
    {
        "ID": 15,
        "NAME": "Katarzyna",
        "LAST_NAME": "Wiśniewska",
        "TYPE_ID": "PARTNER",
        "SOURCE_ID": "RECOMMENDATION",
        "ASSIGNED_BY_ID": 9,
        "COMPANY_ID": 21,
        "POST": "Partner",
        "PHONE": _phones(("WORK", "0048 600-111-444")),
        "_age": 25,
    },
    {
        "ID": 16,
        "NAME": "Michał",
        "LAST_NAME": "Dąbrowski",
        "TYPE_ID": "CLIENT",
        "SOURCE_ID": "CALL",
        "ASSIGNED_BY_ID": 3,
        "COMPANY_ID": 22,
        "POST": "Purchasing",
        "PHONE": _phones(("MOBILE", "+48 600-111 555"), ("HOME", "+48 22 555 66 77")),
        "_age": 20,
    },
    {
        "ID": 17,
        "NAME": "Iwan",
        "LAST_NAME": "Pietrow",
        "TYPE_ID": "CLIENT",
        "SOURCE_ID": "PARTNER",
        "ASSIGNED_BY_ID": 9,
        "PHONE": _phones(("MOBILE", "8 (912) 345-67-89")),
        "_age": 15,
    },
]

COMPANIES: list[dict[str, Any]] = [
    {
        "ID": 21,
        "TITLE": "Kancelaria Prawna Lex Sp. z o.o.",
        "COMPANY_TYPE": "PARTNER",
        "ASSIGNED_BY_ID": 9,
        "INDUSTRY": "CONSULTING",
        "PHONE": _phones(("WORK", "+48 22 123 45 67")),
        "_age": 60,
    },
    {
        "ID": 22,
        "TITLE": "Hurtownia Bałtyk S.A.",
        "COMPANY_TYPE": "CUSTOMER",
        "ASSIGNED_BY_ID": 5,
        "INDUSTRY": "MANUFACTURING",
        "PHONE": _phones(("WORK", "+48 58 765 43 21")),
        "_age": 55,
    },
]

LEADS: list[dict[str, Any]] = [
    {
        "ID": 25,
        "TITLE": "Incoming call +48 601 222 333",
        "STATUS_ID": "NEW",
        "SOURCE_ID": "CALL",
        "ASSIGNED_BY_ID": 5,
        "PHONE": _phones(("WORK", "+48601222333")),
        "_age": 3,
    },
    {
        "ID": 26,
        "TITLE": "Website enquiry - Tomasz Lis",
        "NAME": "Tomasz",
        "LAST_NAME": "Lis",
        "STATUS_ID": "IN_PROCESS",
        "SOURCE_ID": "WEB",
        "ASSIGNED_BY_ID": 3,
        "PHONE": _phones(("MOBILE", "+48 602 333 444")),
        "_age": 5,
    },
    {
        "ID": 27,
        "TITLE": "Anna Kowalska - SIM plan",
        "NAME": "Anna",
        "LAST_NAME": "Kowalska",
        "STATUS_ID": "CONVERTED",
        "SOURCE_ID": "CALL",
        "ASSIGNED_BY_ID": 5,
        "CONTACT_ID": 12,
        "PHONE": _phones(("WORK", "+48600111222")),
        "_age": 41,
    },
]

DEALS: list[dict[str, Any]] = [
    {
        "ID": 57,
        "TITLE": "SIM cards for Hurtownia Bałtyk",
        "CATEGORY_ID": 0,
        "STAGE_ID": "PREPARATION",
        "TYPE_ID": "GOODS",
        "COMPANY_ID": 22,
        "CONTACT_IDS": [16],
        "ASSIGNED_BY_ID": 5,
        "OPPORTUNITY": 12000.0,
        "SOURCE_ID": "CALL",
        "_age": 10,
        "_modified": 2,
    },
    {
        "ID": 63,
        "TITLE": "Support contract renewal",
        "CATEGORY_ID": 0,
        "STAGE_ID": "WON",
        "TYPE_ID": "SERVICE",
        "CONTACT_IDS": [12],
        "ASSIGNED_BY_ID": 5,
        "OPPORTUNITY": 2400.0,
        "SOURCE_ID": "PARTNER",
        "_age": 35,
        "_modified": 20,
    },
    {
        "ID": 68,
        "TITLE": "Initial consultation",
        "CATEGORY_ID": 0,
        "STAGE_ID": "EXECUTING",
        "TYPE_ID": "SERVICES",
        "CONTACT_IDS": [17],
        "ASSIGNED_BY_ID": 9,
        "OPPORTUNITY": 800.0,
        "SOURCE_ID": "PARTNER",
        "_age": 12,
        "_modified": 4,
    },
    {
        "ID": 71,
        "TITLE": "Legal review",
        "CATEGORY_ID": 1,
        "STAGE_ID": "C1:NEGOTIATION",
        "TYPE_ID": "SERVICES",
        "CONTACT_IDS": [12],
        "COMPANY_ID": 21,
        "ASSIGNED_BY_ID": 5,
        "OPPORTUNITY": 5000.0,
        "SOURCE_ID": "CALL",
        "_age": 8,
        "_modified": 1,
    },
    {
        "ID": 74,
        "TITLE": "Framework agreement Lex",
        "CATEGORY_ID": 1,
        "STAGE_ID": "C1:WON",
        "TYPE_ID": "SERVICES",
        "CONTACT_IDS": [15],
        "COMPANY_ID": 21,
        "ASSIGNED_BY_ID": 9,
        "OPPORTUNITY": 30000.0,
        "SOURCE_ID": "RECOMMENDATION",
        "_age": 50,
        "_modified": 30,
    },
    {
        "ID": 76,
        "TITLE": "Fleet tender",
        "CATEGORY_ID": 0,
        "STAGE_ID": "LOSE",
        "TYPE_ID": "SALE",
        "CONTACT_IDS": [14],
        "ASSIGNED_BY_ID": 3,
        "OPPORTUNITY": 45000.0,
        "SOURCE_ID": "WEB",
        "_age": 28,
        "_modified": 14,
    },
]

# Custom fields the demo portal has; arbitrary UF_CRM_* keys are accepted on top of these.
UF_FIELDS: dict[str, dict[str, dict[str, Any]]] = {
    "DEAL": {"UF_CRM_SIM_LINE": {"type": "string", "label": "SIM line"}},
    "CONTACT": {"UF_CRM_PREFERRED_SIM": {"type": "string", "label": "Preferred SIM"}},
    "LEAD": {},
    "COMPANY": {},
}
