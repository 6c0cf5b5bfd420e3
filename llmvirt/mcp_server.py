"""``llmvirt mcp``: a Model Context Protocol server, so an operator's LLM assistant can ask, explain and
(with consent) act.

Built on the official ``mcp`` SDK (``MCPServer``); stdio by default, streamable HTTP with ``--listen``.

- **Read-only tools** (always): ``status``, ``vm_history``, ``place``, ``rebalance_plan``,
  ``recent_plans``, ``plan``, ``recent_actions``, ``outcomes``, ``policies``, ``doctor``. Their
  outputs are the CLI's JSON contracts (docs/json-contracts.md), trimmed by a ``limit``.
- **Resources**: ``llmvirt://cluster/summary`` and ``llmvirt://plan/latest``; **prompts**:
  ``explain_plan`` and ``why_is_host_hot``.
- **Acting needs consent**: ``apply_plan`` exists only when the server was started with
  ``--allow-apply``. It takes the id of a plan ``rebalance_plan`` showed in this session (no free-form
  actions), refuses one older than the staleness limit, applies at most one plan per rate-limit
  interval, asks the client to confirm (elicitation) where the client supports it, and runs through
  the same hysteresis, executor, guardrails, lock and journal as ``llmvirt rebalance --apply``. The
  journal records who asked (the client's name and version, the server's user and process).
- **Safety against the model**: every argument has a typed, bounded schema (names are plain tokens,
  limits are capped, policies are names, never paths); no tool runs a command or reads a file
  outside the store and the policies directory.
"""


from typing import Annotated, Any, Literal

from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, Resolve
from pydantic import BaseModel, Field

from llmvirt.errors import LlmvirtError
from llmvirt.mcp_session import LlmvirtMcp, caller_identity
from llmvirt.policy.constraints import Request

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}$"  #: a host, VM or policy name: a plain token, never a path
PLAN_ID = r"^p-[0-9a-f]{12}$"  #: an id ``rebalance_plan`` handed out
MAX_LIMIT = 500  #: the most rows any tool returns

Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT, description=f"At most this many rows (1..{MAX_LIMIT}).")]
Offset = Annotated[int, Field(ge=0, le=100_000, description="Skip this many rows first (pagination, newest first).")]
HostName = Annotated[str, Field(pattern=NAME, description="A registered host's name.")]
VmName = Annotated[str, Field(pattern=NAME, description="A VM's name as the latest scan saw it.")]
PolicyName = Annotated[str | None, Field(
    default=None, pattern=NAME,
    description="A policy name (under policies/ or a version such as v1) or a strategy such as "
                "baseline:least-loaded, baseline:watcher-wb or baseline:proxmox-crs; default: the active version.")]
Goal = Literal["balance", "consolidate"]


class Confirm(BaseModel):
    """What the operator is asked before a plan is applied."""

    apply: bool = Field(description="Apply this plan now?")


def build(app: LlmvirtMcp) -> Any:
    """The MCPServer with llmvirt's tools, resources and prompts (``apply_plan`` only with allow_apply)."""
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp_types import ToolAnnotations

    server = MCPServer(
        "llmvirt", version=_version(),
        instructions="llmvirt manages libvirt/KVM hosts. Read with status, place and rebalance_plan; plans are dry "
                     "runs. apply_plan (only if the server allows it) applies a plan_id rebalance_plan showed.")
    read_only = ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False)

    def guarded(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except LlmvirtError as exc:
            raise ToolError(str(exc)) from None

    _read_tools(server, app, guarded, read_only)
    _journal_tools(server, app, guarded, read_only)
    if app.allow_apply:
        _apply_tool(server, app, guarded)
    _resources(server, app)
    _prompts(server)
    return server


def _read_tools(server: MCPServer, app: LlmvirtMcp, guarded: Any, read_only: Any) -> None:
    """The read-only tools over the cluster: each runs one of the session's operations, errors as one-line
    tool errors."""

    @server.tool(annotations=read_only)
    def status(host: HostName | None = None, limit: Limit = 100) -> dict[str, Any]:
        """Hosts from the latest scan: capacity, allocation, use, GPUs, and their VMs (status --json)."""
        return guarded(app.status, host, limit)

    @server.tool(annotations=read_only)
    def vm_history(vm: VmName, limit: Limit = 48) -> dict[str, Any]:
        """One VM's recent samples (CPU use as a share of its vCPUs, memory used), oldest first."""
        return guarded(app.vm_history, vm, limit)

    @server.tool(annotations=read_only)
    def place(vcpus: Annotated[int, Field(ge=1, le=1024)], memory_mib: Annotated[int, Field(ge=1, le=1 << 24)],
              gpus: Annotated[int, Field(ge=0, le=16)] = 0,
              vgpu: Annotated[str | None, Field(pattern=NAME)] = None,
              anti_affinity: Annotated[str | None, Field(pattern=NAME)] = None,
              expected_cpu: Annotated[float | None, Field(ge=0.0, le=1.0, description=(
                  "Expected CPU use, share of its vCPUs; default: what a trained scorer was trained with, "
                  "else 0.5"))] = None,
              policy: PolicyName = None, limit: Limit = 20) -> dict[str, Any]:
        """Rank the hosts that can take a new VM, with reasons, and say why the others cannot (place --json)."""
        if gpus and vgpu:
            raise ToolError("use gpus or vgpu, not both")
        req = Request(vcpus=vcpus, memory_mib=memory_mib, gpus=gpus, vgpu_type=vgpu, anti_affinity=anti_affinity)
        return guarded(app.place, req, policy, limit, expected_cpu)

    @server.tool(annotations=read_only)
    def rebalance_plan(goal: Goal = "balance", policy: PolicyName = None,
                       max_migrations: Annotated[int, Field(ge=0, le=100)] = 10,
                       only: Annotated[Literal["pin", "balloon"] | None, Field(
                           description="Plan only vCPU pinning or only balloon sizes (the policy's heads) "
                                       "instead of migrations.")] = None) -> dict[str, Any]:
        """A dry-run plan with each change's reason (each move's predicted effect), and its plan_id:
        migrations for a goal, or with ``only`` pinning or balloon changes. A single migration: max_migrations 1."""
        return guarded(app.rebalance_plan, goal, policy, max_migrations, only)



def _journal_tools(server: MCPServer, app: LlmvirtMcp, guarded: Any, read_only: Any) -> None:
    """Read-only tools over the journal, the outcomes, the policy versions and the checks."""

    @server.tool(annotations=read_only)
    def recent_plans(limit: Limit = 20, offset: Offset = 0) -> dict[str, Any]:
        """Plans that were applied, newest first."""
        return guarded(app.journal_plans, limit, offset)

    @server.tool(annotations=read_only)
    def plan(plan_id: Annotated[int, Field(ge=1)]) -> dict[str, Any]:
        """One applied plan (journal id) with every action and each state change."""
        return guarded(app.journal_plan, plan_id)

    @server.tool(annotations=read_only)
    def recent_actions(limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
        """Executed actions, newest first."""
        return guarded(app.actions, limit, offset)

    @server.tool(annotations=read_only)
    def outcomes(limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
        """Executed actions with their measured outcome and reward (or pending)."""
        return guarded(app.outcomes, limit, offset)

    @server.tool(annotations=read_only)
    def policies() -> dict[str, Any]:
        """Policy versions, the active one marked, with their evaluation."""
        return guarded(app.policies)

    @server.tool(annotations=read_only)
    def doctor(timeout_s: Annotated[float, Field(gt=0, le=30)] = 5.0) -> dict[str, Any]:
        """Checks of the store, every host and the cluster, with fix hints."""
        return guarded(app.doctor, timeout_s)


def _apply_tool(server: MCPServer, app: LlmvirtMcp, guarded: Any) -> None:
    """``apply_plan``: a shown plan, confirmed by the operator where the client can ask."""
    import anyio
    from mcp_types import ToolAnnotations

    def ask_operator(plan_id: Annotated[str, Field(pattern=PLAN_ID)], ctx: Context) -> Elicit[Confirm] | Confirm:
        """The operator's confirmation, asked through the client where it can ask (elicitation);
        a client that cannot ask relies on --allow-apply and the shown plan id."""
        shown = guarded(app.take_shown, plan_id)
        caps = ctx.client_capabilities
        if caps is None or caps.elicitation is None:
            return Confirm(apply=True)
        return Elicit(f"Apply llmvirt plan {plan_id} ({shown.plan.goal}, {shown.plan.policy}): {shown.summary()}?",
                      Confirm)

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=False,
                                             openWorldHint=False))
    async def apply_plan(plan_id: Annotated[str, Field(pattern=PLAN_ID)],
                         confirm: Annotated[ElicitationResult[Confirm], Resolve(ask_operator)],
                         ctx: Context) -> dict[str, Any]:
        """Apply a plan rebalance_plan showed in this session (live migrations through the executor's
        guardrails, lock and journal). The operator is asked to confirm where the client supports it."""
        if not isinstance(confirm, AcceptedElicitation) or not confirm.data.apply:
            return {"plan_id": plan_id, "applied": False, "reason": f"operator answered {confirm.action}"
                    if not isinstance(confirm, AcceptedElicitation) else "operator answered no"}
        shown = guarded(app.take_shown, plan_id)
        caller = caller_identity(ctx)
        result = await anyio.to_thread.run_sync(lambda: guarded(app.apply_shown, shown, caller))
        return {"applied": True, **result}


def _resources(server: MCPServer, app: LlmvirtMcp) -> None:
    """The cluster summary and the latest plan, as resources."""

    @server.resource("llmvirt://cluster/summary", mime_type="application/json")
    def cluster_summary() -> dict[str, Any]:
        """Every host's allocation and use from the latest scan, without the VM lists."""
        doc = app.status(None, MAX_LIMIT)
        return {"hosts": [{k: v for k, v in h.items() if k != "vms"} for h in doc["hosts"]]}

    @server.resource("llmvirt://plan/latest", mime_type="application/json")
    def latest_plan() -> dict[str, Any]:
        """The plan shown last in this session, else the latest applied plan from the journal."""
        if app.shown:
            last = next(reversed(app.shown.values()))
            return {"plan_id": last.plan_id, "shown_at": last.shown_at, **last.doc()}
        rows = app.journal_plans(1)["plans"]
        return app.journal_plan(rows[0]["id"]) if rows else {"plans": []}


def _prompts(server: MCPServer) -> None:
    """Prompts an assistant can start from."""

    @server.prompt()
    def explain_plan(goal: Goal = "balance") -> str:
        """Explain what llmvirt would do now and why, move by move."""
        return (f"Call the rebalance_plan tool with goal {goal!r}. For each move, say which VM goes from which host "
                "to which, and explain the reason and the predicted effect it gives, in plain words. Then list the "
                "VMs that cannot move and why. Say clearly that the plan is a dry run and nothing has changed.")

    @server.prompt()
    def why_is_host_hot(host: HostName) -> str:
        """Explain why a host is busy and what llmvirt would move off it."""
        return (f"Call the status tool with host {host!r} and find its busiest VMs; call vm_history for the top "
                f"three. Explain what makes {host} hot (allocation against capacity, measured use, trends). Then "
                "call rebalance_plan and say which of its moves, if any, leave this host, and why.")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llmvirt")
    except PackageNotFoundError:
        return "0"


def warm_up() -> None:
    """Import what the tools use, so the first call answers as fast as the rest (start-up, not the call)."""
    import llmvirt.measure.outcomes  # noqa: F401
    import llmvirt.policy.decide  # noqa: F401
    import llmvirt.status_view  # noqa: F401
    import llmvirt.store.journal  # noqa: F401
    import llmvirt.store.snapshots  # noqa: F401
    import llmvirt.strategies.registry  # noqa: F401
