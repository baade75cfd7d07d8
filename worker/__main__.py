"""`python -m worker`: the Temporal worker of this deployment's settings."""

import asyncio
import logging

from conveyor.settings import get_settings
from worker import run

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
asyncio.run(run(get_settings()))
