"""Ingest: every device's messages from the broker into the store, written before acknowledged.

The MQTT session is persistent (MQTT 5, clean start off, a long session expiry) and messages
are QoS 1 with manual acknowledgement: paho's thread only queues what arrives; this loop
validates a batch, stores it in one transaction, and only then acknowledges each message. A
station killed between the two is sent the same messages again when it comes back, and the
store keeps each once. Acknowledgements belong to a connection: a message received on an
earlier connection is never acknowledged on a later one (its id may mean another message
there); the broker sends it again instead.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from station.config import StationConfig
from station.liveness import Liveness
from station.store import Refusal, Store
from station.validate import Message, Refused, excerpt, parse

if TYPE_CHECKING:  # paho is imported where a client is made; its types only for checking
    from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

BATCH = 500  # messages per transaction at most
STORE_TROUBLE_S = 10.0  # writes refused this long: the station says so (/healthz, pages)
SWEEP_S = 2.0  # silent devices and spool backlogs are looked at this often
PURGE_S = 3600.0
SESSION_EXPIRY_S = 7 * 86400  # how long the broker keeps messages for a station that is down


@dataclass
class Received:
    topic: str
    payload: bytes
    mid: int
    qos: int
    connection: int  # which connection it came on


class Ingest:
    """Moves every device's messages from the broker into the store, acknowledging each only
    once it is committed or kept as a refusal, so a station crash or a poison message loses
    nothing and wedges nothing."""

    def __init__(self, cfg: StationConfig, store: Store, liveness: Liveness | None = None
                 ) -> None:
        self.cfg = cfg
        self.store = store
        self.liveness = liveness or Liveness()
        self.queue: queue.Queue[Received] = queue.Queue()
        self.connected = threading.Event()
        self.connection = 0
        self._lock = threading.Lock()  # the connection number, against acknowledgements
        self.stored = self.repeats = self.refused = 0
        self._refusal_log = (0.0, 0)  # (when we last logged one, how many since)
        self.client = self._client()

    def _client(self) -> Client:
        import paho.mqtt.client as mqtt

        c = self.cfg.mqtt
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=c.client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True)
        if c.username:
            client.username_pw_set(c.username, c.password())
        if c.tls.enabled:
            client.tls_set(ca_certs=c.tls.ca_file, certfile=c.tls.cert_file,
                           keyfile=c.tls.key_file)
        client.reconnect_delay_set(max(1, round(c.reconnect_min_s)), round(c.reconnect_max_s))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    @property
    def subscription(self) -> str:
        topic = f"{self.cfg.mqtt.topic_prefix}/+/#"
        group = self.cfg.mqtt.shared_group
        return f"$share/{group}/{topic}" if group else topic

    # -- paho's thread ----------------------------------------------------------------------
    def _on_connect(self, client: Client, userdata: Any, flags: ConnectFlags,
                    reason: ReasonCode, properties: Properties | None) -> None:
        if reason.is_failure:
            log.error("broker refused the station: %s", reason)
            return
        with self._lock:
            self.connection += 1
        log.info("connected to %s:%d (session %s), subscribing to %s", self.cfg.mqtt.host,
                 self.cfg.mqtt.port, "resumed" if flags.session_present else "new",
                 self.subscription)
        client.subscribe(self.subscription, qos=1)
        self.connected.set()

    def _on_disconnect(self, client: Client, userdata: Any, flags: DisconnectFlags,
                       reason: ReasonCode, properties: Properties | None) -> None:
        self.connected.clear()
        log.warning("disconnected from the broker (%s); paho reconnects", reason)

    def _on_message(self, client: Client, userdata: Any, msg: MQTTMessage) -> None:
        self.queue.put(Received(msg.topic, bytes(msg.payload), msg.mid, msg.qos,
                                self.connection))

    # -- the loop ---------------------------------------------------------------------------
    def start(self) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        c = self.cfg.mqtt
        self.client.connect_async(c.host, c.port, c.keepalive_s, clean_start=False,
                                  properties=props)
        self.client.loop_start()

    def run(self, stop: threading.Event) -> None:
        """Store and acknowledge until `stop` is set."""
        self.start()
        sweep = Periodic("sweep", SWEEP_S, self.liveness)
        purge = Periodic("purge", PURGE_S, self.liveness)
        a, d = self.cfg.alarms, self.cfg.database
        try:
            while not stop.is_set():
                batch = self._batch(timeout=0.2)
                if batch:
                    self.handle(batch)
                sweep.run(lambda: self.store.alarms.sweep(time.time(), a.offline_after_s,
                                                          a.spool_backlog))
                purge.run(lambda: self.store.retention.purge(
                    time.time(), d.retention_days, d.alert_retention_days,
                    d.clip_retention_days))
        finally:
            self.client.loop_stop()
            self.client.disconnect()

    def _batch(self, timeout: float) -> list[Received]:
        try:
            batch = [self.queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(batch) < BATCH:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def handle(self, batch: list[Received]) -> None:
        messages: list[Message] = []
        refusals: list[Refusal] = []
        for r in batch:
            try:
                messages.append(parse(r.topic, r.payload, self.cfg.mqtt.topic_prefix))
            except Refused as exc:
                refusals.append(Refusal(r.topic, str(exc), excerpt(r.payload)))
            except Exception as exc:  # a message that trips the reader itself: still one
                log.exception("reading a message on %r failed", r.topic[:100])
                refusals.append(Refusal(r.topic, f"unreadable ({type(exc).__name__}: "
                                                 f"{str(exc)[:200]})", excerpt(r.payload)))
        # Every worker takes the rows of a batch in the same order (devices sorted), so two
        # workers sharing a PostgreSQL do not deadlock on each other's devices.
        messages.sort(key=lambda m: (m.device_id, m.kind, m.seq))
        new = self._store(messages, refusals)  # committed: now they may be acknowledged
        foreign = self.store.intake.last_foreign
        self.stored += new
        self.repeats += len(messages) - new - foreign
        self.refused += len(refusals) + foreign
        if refusals:
            self._log_refusals(refusals)
        with self._lock:
            for r in batch:
                if r.qos and r.connection == self.connection:
                    self.client.ack(r.mid, r.qos)

    def _store(self, messages: list[Message], refusals: list[Refusal]) -> int:
        """The batch into the store, come what may: a transient fault (a deadlock between
        workers, the database restarting, a full disk, a lock held, a read-only file) is
        retried, with backoff, for as long as it lasts (nothing was acknowledged, so nothing is
        lost meanwhile), and after STORE_TROUBLE_S it is the station's trouble, on /healthz
        and every page, until the batch goes in; a batch that fails for another reason is
        split in halves until the message that fails alone is found and kept as a refusal (one
        bad message in a batch of 500 costs nine more tries, not 500), so one bad message
        cannot stop the ward's monitoring."""
        from sqlalchemy.exc import DBAPIError, OperationalError

        delay, since = 0.2, time.monotonic()
        while True:
            try:
                stored = self.store.intake.ingest(messages, refusals)
                self.liveness.cleared("storing")
                return stored
            except OperationalError as exc:  # includes deadlocks, lost connections, locks
                why = str(exc.orig).splitlines()[0][:200]
                log.warning("storing a batch of %d failed (%s); retrying in %.1f s",
                            len(messages), why, delay)
                if time.monotonic() - since >= STORE_TROUBLE_S:
                    self.liveness.trouble("storing", f"the database refuses writes: {why}")
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            except (DBAPIError, ValueError, OverflowError, TypeError, KeyError) as exc:
                # (validation should have refused what a database cannot hold; should a
                # message get past it anyway, it is still only one message)
                if len(messages) + len(refusals) > 1:  # find the one: halve the batch
                    if refusals:
                        return (sum(self._store([], [r]) for r in refusals)
                                + self._store(messages, []))
                    half = len(messages) // 2
                    return self._store(messages[:half], []) + self._store(messages[half:], [])
                why = str(getattr(exc, "orig", None) or exc)
                if messages:  # this message cannot be stored: keep it as a refusal
                    m = messages[0]
                    log.error("a %s message from %r refused by the database: %s", m.kind,
                              m.device_id[:60], why[:200])
                    self._store([], [Refusal(f"{self.cfg.mqtt.topic_prefix}/{m.device_id}/"
                                             f"{m.kind}", f"database: {why[:300]}", "")])
                else:
                    log.error("a refusal could not be recorded either: %s", why[:200])
                return 0

    def _log_refusals(self, refusals: list[Refusal]) -> None:
        """The first refusal, then at most one line a minute: a device gone wrong must not
        flood the log."""
        last, since = self._refusal_log
        since += len(refusals)
        now = time.monotonic()
        if now - last >= 60:
            r = refusals[-1]
            log.warning("refused %d message(s)%s, e.g. on %r: %s", since,
                        " in the last minute" if last else "", r.topic[:100], r.reason)
            self._refusal_log = (now, 0)
        else:
            self._refusal_log = (last, since)


class Periodic:
    """A job that runs every `every_s`, and never takes ingest down with it, nor floods the
    log: whatever it raises, the first failure is logged with its traceback, then a line a
    minute while it lasts, and it is a trouble of the station's (`Liveness`: /healthz, the
    pages' banner) until it works again. It is tried again soon (every_s), or, while the
    database is away (a PostgreSQL that restarts), after longer and longer waits up to a
    minute. (A sweep that only caught OperationalError died on a DataError from a seq at the
    database's integer limit, and with it the process, at every restart.)"""

    def __init__(self, name: str, every_s: float, liveness: Liveness) -> None:
        self.name, self.every_s, self.liveness = name, every_s, liveness
        self.due = time.monotonic()
        self.backoff = 0.0
        self.failing_since: float | None = None
        self.logged = 0.0

    def run(self, job: Callable[[], object]) -> None:
        from sqlalchemy.exc import OperationalError

        now = time.monotonic()
        if now < self.due:
            return
        try:
            job()
        except Exception as exc:
            transient = isinstance(exc, OperationalError)
            self.backoff = min(max(2 * self.backoff, 1.0), 60.0) if transient else 0.0
            self.due = now + (self.backoff or self.every_s)
            why = f"{type(exc).__name__}: {getattr(exc, 'orig', None) or exc!s}"
            why = why.splitlines()[0][:300]
            self.liveness.trouble(self.name, why)
            if self.failing_since is None:
                self.failing_since = self.logged = now
                log.error("%s failed (%s); trying again in %.0f s", self.name, why,
                          self.due - now, exc_info=not transient)
            elif now - self.logged >= 60:
                self.logged = now
                log.error("%s still failing (%s)", self.name, why)
            return
        if self.failing_since is not None:
            log.warning("%s works again", self.name)
            self.liveness.cleared(self.name)
        self.failing_since = None
        self.backoff = 0.0
        self.due = now + self.every_s
