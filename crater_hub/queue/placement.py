"""Where jobs fit, for :func:`crater_hub.queue.engine.schedule`: first-fit placement over an index
of the nodes' free capacity (:class:`Nodes`), and plans to preempt best-effort jobs
(:class:`Preemptions`). Both are copies made per cycle; the cluster's objects are never touched."""

import heapq
from bisect import bisect_left
from collections import defaultdict

_BLOCK = 64  # nodes per block of the placement index


class Nodes:
    """The nodes' free capacity, copied, with an index for first-fit placement.

    Nodes are split into blocks of consecutive nodes, each with an upper bound of the free CPU,
    memory and devices (per accelerator) of its unreserved nodes; a search skips the blocks whose
    bounds cannot hold the request and scans the others in order, so it finds the same node as a
    scan of the whole list. Free capacity only shrinks and reserved nodes only grow during a cycle,
    so a bound stays an upper bound without being updated; a block whose scan found nothing gets
    its bounds recomputed, exactly."""

    def __init__(self, nodes):
        self.names = [n.name for n in nodes]
        self.acc = [dict(n.accelerators) for n in nodes]
        self.cpu = [n.cpu_m for n in nodes]
        self.mem = [n.mem_b for n in nodes]
        self.term = [n.terminating for n in nodes]  # read only
        self.reserved = [False] * len(nodes)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.slugs = {slug for acc in self.acc for slug in acc}
        count = len(nodes)
        self.blocks = [range(start, min(start + _BLOCK, count)) for start in range(0, count, _BLOCK)]
        self.bcpu = [0] * len(self.blocks)
        self.bmem = [0] * len(self.blocks)
        self.bacc = {slug: [0] * len(self.blocks) for slug in self.slugs}
        self.cursor = {}  # request -> the node that last held it
        for b in range(len(self.blocks)):
            self._bound(b)

    def _bound(self, b):
        block = self.blocks[b]
        live = [i for i in block if not self.reserved[i]]
        cpu, mem, acc = self.cpu, self.mem, self.acc
        self.bcpu[b] = max([cpu[i] for i in live], default=0)
        self.bmem[b] = max([mem[i] for i in live], default=0)
        for slug, bounds in self.bacc.items():
            bounds[b] = max([acc[i].get(slug, 0) for i in live], default=0)

    def first_fit(self, slug, gpus, cpu_m, mem_b, key=None):
        """The first unreserved node that holds the request (``slug``: None for a CPU-only
        job, whose devices are not counted), or -1.

        The answer for one request can only move later in the list during a cycle, so the search
        for it starts where it last found a node."""
        bcpu, bmem = self.bcpu, self.bmem
        if slug is None:
            bacc = None
        else:
            bacc = self.bacc.get(slug)
            if bacc is None:
                return -1  # no node has the accelerator (gpus > 0 in a device pool)
        acc, cpu, mem, reserved = self.acc, self.cpu, self.mem, self.reserved
        if key is None:  # the request's key (the engine passes the job's ``need``)
            key = (slug, gpus, cpu_m, mem_b)
        start = self.cursor.get(key, 0)
        for b in range(start // _BLOCK, len(self.blocks)):
            if bcpu[b] < cpu_m or bmem[b] < mem_b or (bacc is not None and bacc[b] < gpus):
                continue
            block = self.blocks[b]
            for i in block if block.start >= start else range(start, block.stop):
                if reserved[i] or cpu[i] < cpu_m or mem[i] < mem_b:
                    continue
                if bacc is None or acc[i].get(slug, 0) >= gpus:
                    self.cursor[key] = i
                    return i
            if block.start >= start:
                self._bound(b)
        return -1

    def take(self, i, slug, gpus, cpu_m, mem_b):
        if slug is not None:
            self.acc[i][slug] -= gpus
        self.cpu[i] -= cpu_m
        self.mem[i] -= mem_b

    def reserve(self, i):
        self.reserved[i] = True  # the block's bounds stay upper bounds


class Preemptions:
    """Preemption plans without scanning every node and active job for each waiting job.

    For one (accelerator, devices) request the answer is the first unreserved node (in order)
    whose free plus terminating devices suffice; else the node where evicting best-effort jobs
    (lowest priority, then newest first) frees enough at the least cost (devices, jobs, name).
    Victims sit on one node, a plan reserves its node, and free devices only shrink: so each
    node's plan can only get dearer, and a heap of per-node costs checked when they reach the top
    (recomputed when that node's free devices changed) gives the cheapest plan in turn.
    """

    def __init__(self, nodes, active):
        self.nodes = nodes
        self.active = active
        self.victims = None  # slug -> node index -> ([victim ids], [prefix sums of devices])
        self.direct = {}  # (slug, gpus) -> [node indices, first unchecked position]
        self.having = {}  # slug -> [(node index, free + terminating devices when first asked)]
        self.plans = {}  # (slug, gpus) -> heap of (devices, jobs, name, node, free then)

    def _victims(self):
        by_node = defaultdict(list)
        index = self.nodes.index
        for a in self.active:
            if a.best_effort and a.node and a.node in index:
                by_node[(a.accelerator, index[a.node])].append(a)
        out = defaultdict(dict)
        for (slug, i), jobs in by_node.items():
            jobs.sort(key=lambda a: (a.priority, -(a.started or 0), -a.id))
            prefix = [0]
            for a in jobs:
                prefix.append(prefix[-1] + a.gpus)
            out[slug][i] = ([a.id for a in jobs], prefix)
        self.victims = out

    def _have(self, i, slug):
        return self.nodes.acc[i][slug] + self.nodes.term[i].get(slug, 0)

    def _cost(self, i, slug, gpus):
        ids, prefix = self.victims[slug][i]
        have = self._have(i, slug)
        k = bisect_left(prefix, gpus - have)
        if k == len(prefix):
            return None
        return (prefix[k], k, self.nodes.names[i], i, self.nodes.acc[i][slug])

    def plan(self, slug, gpus):
        """(node index, [victim ids]) or None."""
        if self.victims is None:
            self._victims()
        nodes, key = self.nodes, (slug, gpus)
        direct = self.direct.get(key)
        if direct is None:
            having = self.having.get(slug)
            if having is None:  # (node, free + terminating) of the nodes with the accelerator
                acc, term = nodes.acc, nodes.term
                having = self.having[slug] = [(i, acc[i][slug] + term[i].get(slug, 0))
                                              for i in range(len(acc)) if slug in acc[i]]
            direct = self.direct[key] = [[i for i, have in having if have >= gpus], 0]
        candidates, at = direct
        while at < len(candidates):
            i = candidates[at]
            if not nodes.reserved[i] and self._have(i, slug) >= gpus:
                direct[1] = at
                return i, []
            at += 1
        direct[1] = at
        heap = self.plans.get(key)
        if heap is None:
            heap = []
            for i in self.victims.get(slug, {}):
                if slug in nodes.acc[i]:
                    cost = self._cost(i, slug, gpus)
                    if cost is not None:
                        heap.append(cost)
            heapq.heapify(heap)
            self.plans[key] = heap
        while heap:
            _, k, _, i, free = heap[0]
            if nodes.reserved[i]:
                heapq.heappop(heap)
            elif nodes.acc[i][slug] != free:
                cost = self._cost(i, slug, gpus)
                if cost is None:
                    heapq.heappop(heap)
                else:
                    heapq.heapreplace(heap, cost)
            else:
                return i, self.victims[slug][i][0][:k]
        return None


