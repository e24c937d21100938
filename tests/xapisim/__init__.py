"""A XAPI (XenServer/XCP-ng) simulator for ferry's XenAPI driver tests; see README.md here."""

from tests.xapisim.clock import SimClock, WallClock
from tests.xapisim.model import XapiError
from tests.xapisim.scenario import DEFAULT_SCENARIO
from tests.xapisim.server import XapiSimulator

__all__ = ["DEFAULT_SCENARIO", "SimClock", "WallClock", "XapiError", "XapiSimulator"]
