"""Host maintenance: drain a host with live migrations (:mod:`.planner` decides, :mod:`.run`
drives the migrations within the limits; the records are :mod:`ferry.persistence.drains`)."""
