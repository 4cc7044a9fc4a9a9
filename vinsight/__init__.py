"""VINsight: connected-vehicle telematics. This package holds what every room shares: the wire
contract (:mod:`vinsight.contract`) and the ``vinsight`` command line (:mod:`vinsight.cli`)."""

__version__ = "0.1.0"
