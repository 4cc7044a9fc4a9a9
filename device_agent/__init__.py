"""The in-car agent: reads OBD-II through an ELM327 and GNSS, buffers on disk, publishes over MQTT.

Runs on a Raspberry Pi with only the ``device`` extra installed: no numpy, numba or geopandas here.
"""
