"""The catalog the emulator serves when it is given none: the repository's sample catalog.

Kept as a string so it ships inside the package; a test proves it equals ``data/catalog.yaml``.
"""

from frigade.catalog import Catalog, parse_catalog

SAMPLE_CATALOG_YAML = """\
# Sample flow catalog: the flows the bundled sample exports target, in the simple form (README, "The flow catalog").
flows:
  - slug: flow_onboarding
    name: Onboarding Checklist
    type: CHECKLIST
    steps:
      - id: connect-data
        title: Connect your data
      - id: invite-team
        title: Invite your team
      - id: create-dashboard
        title: Create a dashboard
      - id: set-alerts
        title: Set up alerts
  - slug: flow_welcome_tour
    name: Welcome Tour
    type: TOUR
    steps:
      - id: welcome
        title: Welcome
      - id: sidebar
        title: The sidebar
      - id: search
        title: Search anything
  - slug: flow_announcement
    name: New Reports Announcement
    type: ANNOUNCEMENT
    steps:
      - id: reports-v2
        title: Reports, rebuilt
  - slug: flow_legacy_survey
    name: Old NPS survey
    type: SURVEY
    status: ARCHIVED
    steps:
      - id: score
"""


def sample_catalog() -> Catalog:
    return parse_catalog(SAMPLE_CATALOG_YAML, "the emulator's sample catalog")
