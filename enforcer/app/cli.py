"""The `eir-enforcer` command line.

Exit codes: 0 done; 2 bad input (an option's value, a file, a snapshot or database that is
not there, a path the command cannot open or write), said in one line that names what is
wrong and what was expected; 3 a national snapshot refused by its safety checks, a file that
cannot be read to its end among them (truncated or corrupt gzip); 141 (128 + SIGPIPE, as a
shell reports a command the signal ended) the reader of its output went away (`| head`),
the rest of the output dropped. Anything else ends in a traceback (exit 1): a fault in
eir-enforcer itself, never an answer to input."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import msgspec
import psycopg

from enforcer.engine.imei import imei_rules
from enforcer.clock import SystemClock, clock_from
from enforcer.config import Config, ConfigError, load_config
from enforcer.db.migrate import migrate
from enforcer.engine.devicemodel import model_json
from enforcer.engine.identity import Mode, read_imei
from enforcer.engine.imei import parse_imei
from enforcer.files.importing import Kind, import_file
from enforcer.logs import LOG_FORMATS, setup_logging
from enforcer.engine.state import EnforcementState
from enforcer.files.snapshots import (SnapshotConflict, SnapshotDraft, load_snapshot,
                                      load_tac_parts, next_generation, save_snapshot)
from enforcer.engine.lifecycle import NoticeState
from enforcer.embedded.services import EmbeddedServices, ServiceError, ServicePorts
from enforcer.db.migrate import NotMigrated, require_migrated
from enforcer.files.delivery import file_refusal
from enforcer.files.listfile import ListFileReader, LoadReport
from enforcer.app.options import (ASKED_IMEI_KEY, BIGINT_MAX, EXIT_USAGE, IMEI_KEY, IMSI,
                                  LOG_LEVELS, MSISDN, NON_NEGATIVE, NONBLANK, POSITIVE, TIME,
                                  Parser, existing_file, log_level, number_type)
from enforcer.engine.subscriber import mask
from rules.policy import PolicyError, load_policy

# A command imports what only it runs when it runs: the whole application is some 1.5 s of
# imports (the worker's Kafka clients, serve's Diameter stack, the demo), which a mistyped
# option or an `imei` lookup need not wait for.
EXIT_REFUSED = 3  # a registry or provisioning file failed its safety checks: nothing written
EXIT_READER_GONE = 128 + signal.SIGPIPE


class UnusableDirectory(Exception):
    """A directory the command was given, or configured with, that it cannot use."""


def _print(obj: object) -> None:
    sys.stdout.write(msgspec.json.encode(obj).decode() + "\n")


@contextmanager
def _state_dir(args: argparse.Namespace, config: Config) -> Iterator[Path]:
    """The snapshot directory (--state, else state.dir); what the file system refuses there
    is an UnusableDirectory naming where the directory came from."""
    directory = Path(args.state or config.state.dir)
    where = "argument --state" if args.state else "configuration key state.dir"
    there = next((path for path in (directory, *directory.parents) if path.exists()), None)
    if there is not None and not there.is_dir():
        inside = "" if there == directory else f", nor can it be made in {there}"
        raise UnusableDirectory(f"{where}: {directory} is not a directory{inside}")
    try:
        yield directory
    except OSError as exc:
        raise UnusableDirectory(f"{where}: {_os_error(exc)}") from exc


def _load_state(args: argparse.Namespace, config: Config) -> EnforcementState:
    with _state_dir(args, config) as directory:
        return load_snapshot(directory, load_policy(config.policy.file or None))


def _one_more(limit: int) -> int:
    """A row past `limit`, to tell whether it cut the answer (within a bigint)."""
    return min(limit + 1, BIGINT_MAX)


def _say_if_cut(command: str, found: int, limit: int) -> None:
    """One line on stderr when `limit` left rows out: stdout stays the rows alone."""
    if found > limit:
        print(f"eir-enforcer {command}: {limit:,} shown; --limit N for more", file=sys.stderr)


def _os_error(exc: OSError) -> str:
    """An OSError in one line: its path and the system's words, or its own message."""
    return f"{exc.filename}: {exc.strerror}" if exc.strerror and exc.filename else str(exc)


def cmd_imei(args: argparse.Namespace, config: Config) -> int:
    rules = imei_rules(config)
    for value in args.values:
        _print(parse_imei(value, rules).as_json())
    return 0


def cmd_check(args: argparse.Namespace, config: Config) -> int:
    from enforcer.engine.decide import decide, decision_at
    from enforcer.engine.events import AttachBatch, AttachEvent
    state = _load_state(args, config)
    when = SystemClock().now_ms() if args.time is None else args.time
    imei = read_imei(args.imei, Mode.LENIENT, imei_rules(config))
    batch = AttachBatch.from_events([AttachEvent(imei, args.imsi, args.msisdn, when,
                                                 args.emergency)])
    decision = decision_at(decide(batch, state), batch, 0)
    model = None if imei.key is None else model_json(state.tacs, state.blocked_tacs,
                                                     int(imei.key))
    _print({"imei": imei.as_json(), "generation": state.generation, "model": model,
            **decision.as_json()})
    return 0


def cmd_lists_stats(args: argparse.Namespace, config: Config) -> int:
    state = _load_state(args, config)
    stats = state.lists.stats()
    stats["registry"] = {"devices": state.devices.count, "bytes": state.devices.nbytes}
    for name, part in (("tacs", state.tacs), ("blocked_tacs", state.blocked_tacs)):
        stats[name] = None if part is None else {"tacs": len(part), "bytes": part.nbytes}
    _print(stats)
    return 0


def cmd_state_build(args: argparse.Namespace, config: Config) -> int:
    from enforcer.files.build import SourceFiles, build_from_files
    policy = load_policy(config.policy.file or None)
    with _state_dir(args, config) as directory:
        generation = next_generation(directory)
    files = SourceFiles(args.white, args.black, args.devices, args.cartables, args.operator_sims)
    state, report = build_from_files(files, config, policy, generation)
    if state is not None:
        with _state_dir(args, config) as directory:
            save_snapshot(state, directory)
    _print(report.as_json())
    if report.refused:
        print(f"eir-enforcer state build: refused: {report.refused}", file=sys.stderr)
        return EXIT_REFUSED
    return 0


def cmd_registry_import(args: argparse.Namespace, config: Config) -> int:
    # The realign reads the mapped registry once and lets it go as it reads (load_snapshot),
    # and writes the new one's columns into the files they are saved as (SnapshotDraft).
    state = _load_state(args, config)
    with ExitStack() as stack:
        with _state_dir(args, config) as directory:
            draft = stack.enter_context(SnapshotDraft(directory, state.generation + 1))
        new, report = import_file(state, Kind(args.kind), args.file, config, draft.column)
        if new is not None:
            with _state_dir(args, config) as directory:
                save_snapshot(new, directory, draft)
    _print(report.as_json())
    if report.refused:
        print(f"eir-enforcer registry import: refused: {args.file}: {report.refused}",
              file=sys.stderr)
        return EXIT_REFUSED
    return 0


def cmd_subscribers_import(args: argparse.Namespace, config: Config) -> int:
    from enforcer.db.subscribers import record_numbers
    from enforcer.files.subscriberfile import SubscriberFileReader
    require_migrated(config.postgres.dsn)
    rows = ListFileReader(imei_rules(config), config.lists.csv_chunk_lines,
                          config.lists.bad_rows_reported)
    reader = SubscriberFileReader(rows, config.lists.csv_chunk_lines,
                                  load_policy(config.policy.file or None).home_mcc)
    seen_ms = clock_from(config.clock.file).now_ms()
    # Read through once first: a file refused (not readable to its end, too many bad rows)
    # writes nothing, as a registry file refused swaps nothing.
    report = LoadReport(str(args.file))
    for _ in reader.chunks(args.file, report, seen_ms):
        pass
    refused = file_refusal(report, config.lists.max_bad_share)
    if refused is None:
        # A chunk a transaction: `serve` follows rows by when they were written, within a
        # minute of their commit (follow.followers.FOLLOW_OVERLAP); one transaction for a
        # whole country would commit rows written long before.
        with psycopg.connect(config.postgres.dsn, autocommit=True) as conn:
            for pairs in reader.chunks(args.file, LoadReport(str(args.file)), seen_ms):
                record_numbers(conn, pairs)
    _print({**report.as_json(), "refused": refused})
    if refused is not None:
        print(f"eir-enforcer subscribers import: refused: {args.file}: {refused}",
              file=sys.stderr)
        return EXIT_REFUSED
    return 0


def cmd_state_synth(args: argparse.Namespace, config: Config) -> int:
    from enforcer.embedded.synth import CountrySpec, build_country
    if args.imeis is not None and not args.devices <= args.imeis <= 2 * args.devices:
        print(f"eir-enforcer state synth: argument --imeis: {args.imeis} is not within "
              f"--devices and twice that ({args.devices}-{2 * args.devices}): a device has one "
              "or two IMEIs", file=sys.stderr)
        return EXIT_USAGE
    with _state_dir(args, config) as directory:
        generation = next_generation(directory)
    country = build_country(CountrySpec(devices=args.devices, imeis=args.imeis, seed=args.seed),
                            generation)
    state = EnforcementState(country.lists, country.devices,
                             load_policy(config.policy.file or None))
    with _state_dir(args, config) as directory:
        target = save_snapshot(state, directory)
    _print({"snapshot": str(target), "devices": country.devices.count,
            "imeis": len(country.lists.white_index)})
    return 0


def _services(config: Config) -> EmbeddedServices:
    return EmbeddedServices.at(Path(config.services.dir),
                               ServicePorts(config.services.kafka_port,
                                            config.services.postgres_port),
                               config.postgres.dsn.rsplit("/", 1)[-1])


def cmd_services(args: argparse.Namespace, config: Config) -> int:
    services = _services(config)
    if args.action == "up":
        services.up()
    elif args.action == "down":
        services.down()
    _print({"services": [s.as_json() for s in services.status()],
            "kafka": services.broker.bootstrap, "postgres": services.postgres.dsn})
    return 0


def cmd_db_migrate(args: argparse.Namespace, config: Config) -> int:
    _print({"applied": migrate(config.postgres.dsn)})
    return 0


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from enforcer.app.worker import run_worker
    return run_worker(config)


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from enforcer.app.serve import run_serve
    return run_serve(config)


def cmd_history(args: argparse.Namespace, config: Config) -> int:
    from enforcer.app.history import device_history
    from enforcer.endpoints.statusquery import current_state
    snapshot = _load_state(args, config)
    with psycopg.connect(config.postgres.dsn) as conn:
        state = current_state(snapshot, conn, config)
        _print(device_history(state, conn, args.imei, args.reveal))
    return 0


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    from enforcer.endpoints.statusquery import Caller, ask, current_state
    snapshot = _load_state(args, config)
    with psycopg.connect(config.postgres.dsn, autocommit=True) as conn:
        state = current_state(snapshot, conn, config)
        answer = ask(state, conn, args.imei, args.msisdn, Caller("cli"),
                     clock_from(config.clock.file).now_ms(), config.history.keep_days)
    # As the answer leaves out what it does not know, so is the model left out.
    model = model_json(state.tacs, state.blocked_tacs, args.imei)
    _print({"imei": f"{args.imei:014d}", **({"model": model} if model else {}),
            **answer.as_json()})
    return 0


def cmd_clones_list(args: argparse.Namespace, config: Config) -> int:
    from enforcer.db.clones import list_flags
    with psycopg.connect(config.postgres.dsn) as conn:
        flags = list_flags(conn, _one_more(args.limit))
        for key, reason, flagged, imsi, msisdn, recorded in flags[:args.limit]:
            _print({"imei": f"{key:014d}", "reason": reason, "flagged_at": flagged.isoformat(),
                    "imsi": str(imsi) if args.reveal else mask(imsi),
                    "msisdn": str(msisdn) if args.reveal else mask(msisdn),
                    "recorded_at": recorded.isoformat()})
    _say_if_cut("clones list", len(flags), args.limit)
    return 0


def cmd_notices_list(args: argparse.Namespace, config: Config) -> int:
    from enforcer.db.notices import find, kind_stored
    from enforcer.notices.admin import row_json
    kinds = sorted({rule.notice_kind for rule in load_policy(config.policy.file or None).rules
                    if rule.notice_kind})
    with psycopg.connect(config.postgres.dsn) as conn:
        # A kind the policy no longer opens may still have notices, live ones among them.
        if args.kind is not None and args.kind not in kinds and not kind_stored(conn, args.kind):
            print(f"eir-enforcer notices list: argument --kind: {args.kind!r} is no notice kind "
                  f"of the policy ({', '.join(kinds)}) nor of a stored notice", file=sys.stderr)
            return EXIT_USAGE
        rows = find(conn, state=args.state, kind=args.kind, imei_key=args.imei,
                    msisdn=args.msisdn, due_before_ms=args.due_before,
                    limit=_one_more(args.limit))
        for row in rows[:args.limit]:
            _print(row_json(row, args.reveal))
    _say_if_cut("notices list", len(rows), args.limit)
    return 0


def cmd_notices_show(args: argparse.Namespace, config: Config) -> int:
    from enforcer.notices.admin import show
    tacs, blocked = load_tac_parts(Path(config.state.dir))
    with psycopg.connect(config.postgres.dsn) as conn:
        shown = show(conn, args.id, args.reveal, lambda key: model_json(tacs, blocked, key))
    if shown is None:
        print(f"eir-enforcer notices: no notice {args.id}", file=sys.stderr)
        return EXIT_USAGE
    _print(shown)
    return 0


def cmd_notices_cancel(args: argparse.Namespace, config: Config) -> int:
    from enforcer.db.notices import live_sms_kinds
    from enforcer.engine.noticemessages import check_templates
    from enforcer.notices.admin import cancel, notice_json
    # A cut notice's restore goes with its SMS, rendered here.
    with psycopg.connect(config.postgres.dsn) as conn:
        check_templates(config.notices, load_policy(config.policy.file or None), load_policy(),
                        live_sms_kinds(conn))
        cancelled = cancel(conn, args.id, args.reason, config, clock_from(config.clock.file),
                           load_tac_parts(Path(config.state.dir))[0])
    if cancelled is None:
        print(f"eir-enforcer notices: notice {args.id} is not live (or not there)",
              file=sys.stderr)
        return EXIT_USAGE
    _print(notice_json(cancelled, reveal=False))
    return 0


def cmd_demo(args: argparse.Namespace, config: Config) -> int:
    from enforcer.embedded.demo import DemoOptions, run_demo
    return run_demo(config, DemoOptions(args.devices, args.rate, args.duration, args.bad_share,
                                        args.keep_services, args.days))


def command_group(sub: argparse._SubParsersAction, name: str, help: str,
                  description: str) -> argparse._SubParsersAction:
    """A command with subcommands of its own (`eir-enforcer NAME SUBCOMMAND`)."""
    return sub.add_parser(name, help=help, description=description).add_subparsers(
        dest=f"{name}_command", required=True)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="eir-enforcer",
        description="Enforce a national device registry on an operator's network.")
    parser.add_argument("--config", type=existing_file,
                        help="TOML configuration file (environment: EIR_*)")
    parser.add_argument("--log-level", type=log_level, default="WARNING",
                        help=f"one of {', '.join(LOG_LEVELS)}")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="json",
                        help="json (one object per line, for collectors) or text (for people)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("imei", help="parse IMEIs and print one JSON object per value",
                       description="Parse each VALUE (IMEI, IMEISV, imei-/imeisv- PEI) and "
                       "print its key, TAC, SNR, SVN, check-digit state and problems as JSON.")
    p.add_argument("values", nargs="+", metavar="VALUE")
    p.set_defaults(run=cmd_imei)

    p = sub.add_parser("check", help="decide one attach against a state snapshot",
                       description="Print, as JSON, the decision for one attach event.")
    p.add_argument("--imei", required=True,
                   help="any form the stream reads; a malformed IMEI is decided too")
    p.add_argument("--imsi", type=IMSI, required=True, help="5-15 digits, or imsi-…")
    p.add_argument("--msisdn", type=MSISDN, required=True,
                   help="international number: digits, +…, or msisdn-…")
    p.add_argument("--emergency", action="store_true", help="an emergency attach")
    p.add_argument("--time", type=TIME,
                   help="event time: RFC 3339 date-time or epoch ms (default: now)")
    p.add_argument("--state", help="snapshot directory (default: state.dir)")
    p.set_defaults(run=cmd_check)

    lists_sub = command_group(sub, "lists", help="the white, black and cut-off lists",
                              description="Inspect the lists of the current snapshot.")
    p = lists_sub.add_parser("stats", help="sizes, memory and generation",
                             description="Print list sizes, memory and generation as JSON.")
    p.add_argument("--state", help="snapshot directory (default: state.dir)")
    p.set_defaults(run=cmd_lists_stats)

    state_sub = command_group(sub, "state", help="build state snapshots",
                              description="Build a snapshot of lists and registry.")
    p = state_sub.add_parser("build", help="from the registry's CSV files (gzip accepted)",
                             description="Build the next generation from registry files and "
                             "snapshot it; bad rows are reported with line numbers. Refused, "
                             f"with nothing written and exit code {EXIT_REFUSED}, when a file "
                             "cannot be read to its end (a truncated gzip), has no rows or too "
                             "many bad ones (lists.max_bad_share).")
    p.add_argument("--white", type=existing_file, required=True, help="registered IMEIs: imei")
    p.add_argument("--black", type=existing_file, help="black list: imei,reason")
    p.add_argument("--devices", type=existing_file,
                   help="devices: imeis(;-separated, slot order),owner_msisdn,source,registered_on")
    p.add_argument("--cartables", type=existing_file,
                   help="national-ID cartables: cartable_id,msisdn")
    p.add_argument("--operator-sims", type=existing_file, help="operator SIMs: imei,msisdn")
    p.add_argument("--state", help="snapshot directory (default: state.dir)")
    p.set_defaults(run=cmd_state_build)
    p = state_sub.add_parser("synth", help="a synthetic country",
                             description="Build and snapshot a synthetic country.")
    p.add_argument("--devices", type=POSITIVE, default=1_000_000)
    p.add_argument("--imeis", type=POSITIVE,
                   help="--devices to twice that (default: half the devices dual-SIM)")
    p.add_argument("--seed", type=NON_NEGATIVE, default=7)
    p.add_argument("--state", help="snapshot directory (default: state.dir)")
    p.set_defaults(run=cmd_state_synth)

    registry_sub = command_group(sub, "registry", help="the national registry's snapshots",
                                 description="Keep the state in step with the registry's files.")
    p = registry_sub.add_parser(
        "import", help="a white list, black list, devices, TAC database or blocked TACs "
        "file (CSV, gzip accepted)",
        description="Stream FILE, compare it with the current snapshot (added, removed, "
        "changed), and swap in the next generation; refused, with the reason and exit code "
        f"{EXIT_REFUSED}, when FILE cannot be read to its end (a truncated gzip), too many "
        "rows are bad, the list shrinks too much or its IMEIs starting with 0 fall in number "
        "(lists.max_bad_share, lists.max_shrink_share, "
        "lists.max_leading_zero_fall).")
    p.add_argument("file", type=existing_file)
    p.add_argument("--kind", required=True, choices=[k.value for k in Kind],
                   help="white: imei; black: imei,reason; owners: the devices file "
                   "(imeis,owner_msisdn,source,registered_on); tac: the GSMA's TAC database "
                   "(its export, or tac,manufacturer,model,device_type,rats); tac_blocked: "
                   "the regulator's blocked TACs (tac,reason)")
    p.add_argument("--state", help="snapshot directory (default: state.dir)")
    p.set_defaults(run=cmd_registry_import)

    p = sub.add_parser("services", help="embedded broker and database for a laptop or tests",
                       description="Start, stop or show the embedded Kafka-compatible broker "
                       "and PostgreSQL under services.dir, on the configured loopback ports.")
    p.add_argument("action", choices=("up", "down", "status"))
    p.set_defaults(run=cmd_services)

    subscribers_sub = command_group(
        sub, "subscribers", help="the operator's subscribers' numbers by IMSI",
        description="The MSISDN of each home IMSI, which checks without an MSISDN (S13, "
        "N5g-eir without a GPSI) look up; the workers learn them from the attaches.")
    p = subscribers_sub.add_parser(
        "import", help="a provisioning file: imsi,msisdn (CSV, gzip accepted)",
        description="Stream FILE into the subscribers' numbers, each IMSI's number replacing "
        "the one held (an attach seen later replaces it in turn); bad rows (not two fields, "
        "no IMSI or MSISDN, an IMSI of another country than the policy's home_mcc) are "
        "reported by line and skipped. Prints the report as JSON; refused, with the reason "
        f"and exit code {EXIT_REFUSED}, importing nothing, when FILE cannot be read to its "
        "end (a truncated gzip), has no rows, or too many rows are bad "
        "(lists.max_bad_share).")
    p.add_argument("file", type=existing_file)
    p.set_defaults(run=cmd_subscribers_import)

    db_sub = command_group(sub, "db", help="the database", description="Database maintenance.")
    p = db_sub.add_parser("migrate", help="apply the schema migrations",
                          description="Apply every migration not yet applied (safe to run "
                          "twice, and from several workers at once).")
    p.set_defaults(run=cmd_db_migrate)

    p = sub.add_parser("run", help="the worker: attach events from Kafka",
                       description="Consume attach events, decide, record slot usage and "
                       "emit effects until SIGTERM or SIGINT.")
    p.set_defaults(run=cmd_run)

    p = sub.add_parser("serve", help="the N5g-eir equipment check (3GPP TS 29.511) over HTTP",
                       description="Answer GET /n5g-eir-eic/v1/equipment-status on eic.port "
                       "from the snapshot and what the workers store (registry changes, "
                       "cutoffs), taken in every eic.follow_s, until SIGTERM or SIGINT.")
    p.set_defaults(run=cmd_serve)

    p = sub.add_parser("history", help="which SIMs used each slot of a device",
                       description="List the SIMs that used each slot of this IMEI's device, "
                       "with first and last seen. Numbers are masked unless --reveal.")
    p.add_argument("imei", type=IMEI_KEY)
    p.add_argument("--reveal", action="store_true", help="show IMSI and MSISDN in full")
    p.add_argument("--state", help="snapshot directory (default: state.dir)")
    p.set_defaults(run=cmd_history)

    p = sub.add_parser("status", help="the IMEI status query of a used phone's buyer",
                       description="What the registry and the network know of this IMEI's "
                       "device, as the buyer may see it (docs/operations.md), one status: "
                       "use_every_slot (the slots the requester's SIM has not used yet); "
                       "blacklisted (with its reason, in a cartable or not); misused (flagged "
                       "by clone detection: no number); owned (in a cartable: ask the owner); "
                       "previous_user (the last other SIM seen with it, and when); "
                       "no_previous_user. Every query is recorded (status_queries).")
    p.add_argument("imei", type=ASKED_IMEI_KEY)
    p.add_argument("--msisdn", type=MSISDN, required=True, help="the requester's number")
    p.add_argument("--state", help="snapshot directory (default: state.dir)")
    p.set_defaults(run=cmd_status)

    clones_sub = command_group(sub, "clones", help="IMEIs flagged misused by clone detection",
                               description="Clone detection's flags.")
    p = clones_sub.add_parser("list", help="flagged IMEIs, newest first, as JSON lines",
                              description="Each flagged IMEI with why (imsis: too many SIMs "
                              "within the window; operators; cells; rat: attaches on a radio "
                              "its model lacks) and the attach that flagged it. Numbers are "
                              "masked unless --reveal.")
    p.add_argument("--limit", type=POSITIVE, default=100,
                   help="the newest this many (default: %(default)s)")
    p.add_argument("--reveal", action="store_true", help="show IMSI and MSISDN in full")
    p.set_defaults(run=cmd_clones_list)

    notices_sub = command_group(sub, "notices", help="notices: warnings, reminders, cutoffs",
                                description="The NOC's view of notices (numbers masked unless "
                                "--reveal) and its hand on them.")
    p = notices_sub.add_parser("list", help="notices, filtered, as JSON lines",
                               description="List notices, oldest first.")
    p.add_argument("--state", choices=[s.value for s in NoticeState])
    p.add_argument("--kind", help="a notice kind of the policy, e.g. ownership_transfer")
    p.add_argument("--imei", type=IMEI_KEY)
    p.add_argument("--msisdn", type=MSISDN)
    p.add_argument("--due-before", type=TIME,
                   help="next step due before this time (RFC 3339 date-time or epoch ms)")
    p.add_argument("--limit", type=POSITIVE, default=100,
                   help="the oldest this many (default: %(default)s)")
    p.add_argument("--reveal", action="store_true", help="show IMSI and MSISDN in full")
    p.set_defaults(run=cmd_notices_list)
    p = notices_sub.add_parser("show", help="one notice, its transitions and messages",
                               description="One notice with every transition and message.")
    p.add_argument("id", type=POSITIVE)
    p.add_argument("--reveal", action="store_true", help="show IMSI and MSISDN in full")
    p.set_defaults(run=cmd_notices_show)
    p = notices_sub.add_parser("cancel", help="cancel a live notice (restores a cut one)",
                               description="Cancel a live notice; a cut subject is restored "
                               "(command and SMS through the outbox).")
    p.add_argument("id", type=POSITIVE)
    p.add_argument("--reason", type=NONBLANK, required=True,
                   help="recorded with the cancellation")
    p.set_defaults(run=cmd_notices_cancel)

    p = sub.add_parser("demo", help="the worker on embedded services, with synthetic traffic",
                       description="Build a synthetic country and show how each kind of attach "
                       "is decided, then start the embedded broker and PostgreSQL, feed the "
                       "worker steady synthetic traffic and show its progress live.")
    p.add_argument("--devices", type=POSITIVE, default=1_000_000)
    p.add_argument("--rate", type=POSITIVE, default=5_000, help="attach events per second")
    p.add_argument("--duration", type=number_type(0, math.inf, above_lowest=True), default=60.0,
                   help="seconds (Ctrl-C stops too)")
    p.add_argument("--bad-share", type=number_type(0, 1, above_lowest=False), default=0.001,
                   help="share of broken messages, to show the dead-letter topic")
    p.add_argument("--days", type=number_type(0, math.inf, above_lowest=True), default=40.0,
                   help="simulated days over --duration: the clock runs that much faster")
    p.add_argument("--keep-services", action="store_true",
                   help="leave the broker and database running afterwards")
    p.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        config = load_config(args.config)
        code = args.run(args, config)
        sys.stdout.flush()  # a reader gone is found here, not in the flush at exit
        return code
    except BrokenPipeError:
        # The signal module's recipe for SIGPIPE: what is left to write goes nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_READER_GONE
    except (ConfigError, PolicyError, UnusableDirectory, NotMigrated, ServiceError,
            SnapshotConflict) as exc:
        print(f"eir-enforcer: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except psycopg.OperationalError as exc:
        # libpq adds hints on lines of their own ("Is the server running on that host…?").
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        print(f"eir-enforcer: PostgreSQL (postgres.dsn): {lines[0]}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a path of the configuration's (services.dir, clock.file, …)
        print(f"eir-enforcer: {_os_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print("eir-enforcer: not enough memory for this (fewer --devices?)", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
