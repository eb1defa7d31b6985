"""The optimized HLO text that XLA prints (`compiled.as_text()`), read: computations and their instructions, how many
times each runs (while loops' trip counts, calls), and per step the bytes each kind of collective moves and the
largest live values. Used by benchmarks/tpu_aot.py and the pod-scale tests."""

import math
import re

COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all', 'collective-permute')
DTYPE_BYTES = {
    'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2, 's32': 4, 'u32': 4, 'f32': 4,
    's64': 8, 'u64': 8, 'f64': 8, 'c64': 8, 'c128': 16, 'f8e4m3fn': 1, 'f8e5m2': 1, 's4': 0.5, 'u4': 0.5,
}  # fmt: skip
SHAPE = re.compile(r'\b(' + '|'.join(DTYPE_BYTES) + r')\[([\d,]*)\]')
CALLEE = r'(?:calls|body|condition|to_apply|true_computation|false_computation)=%([\w.\-]+)'


def _split_type(rest):
    """'(f32[2]{0}, s32[]) tuple(%a, %b), x=y' -> ('(f32[2]{0}, s32[])', 'tuple(%a, %b), x=y')."""
    if not rest.startswith('('):
        head, _, tail = rest.partition(' ')
        return head, tail
    depth = 0
    for index, char in enumerate(rest):
        depth += {'(': 1, ')': -1}.get(char, 0)
        if depth == 0:
            return rest[: index + 1], rest[index + 2 :]
    return rest, ''


def _operands(text):
    """The %names inside the opcode's parentheses (not those of calls=, to_apply= ...)."""
    depth = 0
    for index, char in enumerate(text):
        depth += {'(': 1, ')': -1}.get(char, 0)
        if depth == 0 and char == ')':
            return re.findall(r'%([\w.\-]+)', text[:index])
    return re.findall(r'%([\w.\-]+)', text)


def type_bytes(type_text):
    return sum(
        DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(',') if d) for dtype, dims in SHAPE.findall(type_text)
    )


def parse_hlo(text):
    """{computation: [instruction dict(name, type, opcode, operands, attributes)]}, and the entry's name."""
    computations, entry, current = {}, None, None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.endswith('{') and ' = ' not in stripped.split('(')[0] and stripped.startswith(('%', 'ENTRY')):
            current = stripped.removeprefix('ENTRY ').split(' ')[0].lstrip('%')
            entry = current if stripped.startswith('ENTRY') else entry
            computations[current] = []
        elif stripped == '}':
            current = None
        elif current and ' = ' in stripped:
            name, _, rest = stripped.removeprefix('ROOT ').partition(' = ')
            type_text, call = _split_type(rest)
            opcode, _, arguments = call.partition('(')
            computations[current].append(
                dict(
                    name=name.lstrip('%'),
                    type=type_text,
                    opcode=opcode,
                    operands=_operands('(' + arguments),
                    attributes=arguments,
                )
            )
    return computations, entry


def trip_count(instruction, computations):
    """A while loop's trips: XLA's known_trip_count when it says, else the bound its condition compares the counter
    with (a scan's `i < depth`, the form the TPU compiler leaves)."""
    known = re.search(r'known_trip_count[^0-9]*(\d+)', instruction['attributes'])
    if known:
        return int(known.group(1))
    condition = re.search(r'condition=%([\w.\-]+)', instruction['attributes'])
    bounds = [
        int(match.group(1))
        for i in computations.get(condition.group(1) if condition else None, ())
        if i['opcode'] == 'constant' and (match := re.match(r'(\d+)\)', i['attributes']))
    ]
    return bounds[0] if len(bounds) == 1 else 1


def multipliers(computations, entry):
    """How many times each computation runs per step: a while body its trip count times its caller's; a
    computation called from several places (an async start and its done) counts once, as its most frequent call."""
    times, pending = {entry: 1}, [entry]
    while pending:
        caller = pending.pop()
        for instruction in computations.get(caller, ()):
            attributes = instruction['attributes']
            body = re.search(r'body=%([\w.\-]+)', attributes)
            callees = re.findall(CALLEE, attributes)
            for branches in re.findall(r'branch_computations=\{([^}]*)\}', attributes):
                callees += re.findall(r'%([\w.\-]+)', branches)
            for callee in callees:
                trips = trip_count(instruction, computations) if body and callee == body.group(1) else 1
                count = times[caller] * trips
                if count > times.get(callee, 0):
                    times[callee] = count
                    pending.append(callee)
    return times


def analyse_hlo(text):
    """Instruction counts and collective bytes per step of an optimized HLO module."""
    computations, entry = parse_hlo(text)
    times = multipliers(computations, entry)
    by_name = {i['name']: i for instructions in computations.values() for i in instructions}
    fused = {
        c
        for i in by_name.values()
        if i['opcode'] == 'fusion'
        for c in re.findall(r'calls=%([\w.\-]+)', i['attributes'])
    }
    # the TPU compiler's async collectives: an `async-collective-start` fusion holds the collective, and its
    # `async-collective-done` and `async_collective_fusion` continuations (the work overlapped with it) hold copies
    # of the same op: one collective, counted at its start
    continuation = {
        callee
        for instructions in computations.values()
        for i in instructions
        if i['name'].startswith('async-collective-done')
        for callee in re.findall(r'calls=%([\w.\-]+)', i['attributes'])
    }
    continuation |= {name for name in computations if name.startswith('async_collective_fusion')}
    collectives = {kind: dict(count=0, bytes=0) for kind in COLLECTIVES}
    other = set()
    counts = dict(scatter=0, sort=0, dot=0, f32_dot=0, while_loops=0)
    for computation, instructions in computations.items():
        for instruction in instructions:
            opcode = instruction['opcode']
            operand_types = [by_name[o]['type'] for o in instruction['operands'] if o in by_name]
            if opcode in ('scatter', 'sort'):
                counts[opcode] += 1
            elif opcode in ('dot', 'convolution'):
                counts['dot'] += 1
                counts['f32_dot'] += any(t.startswith('f32') for t in operand_types[:2])
            elif opcode == 'while':
                counts['while_loops'] += 1
            kind = opcode.removesuffix('-done')
            if kind in COLLECTIVES and opcode.endswith('-done'):  # async: operands are those of the matching start
                start = by_name.get(instruction['operands'][0]) if instruction['operands'] else None
                operand_types = [by_name[o]['type'] for o in (start or {}).get('operands', ()) if o in by_name]
            elif kind not in COLLECTIVES:
                if any(c in opcode for c in COLLECTIVES) and not opcode.endswith('-start'):
                    other.add(opcode)
                continue
            if computation in continuation:
                continue
            # the full tensor's bytes: an all-gather's result, a reduce-scatter's operand
            size = max(type_bytes(instruction['type']), sum(type_bytes(t) for t in operand_types))
            collectives[kind]['count'] += times.get(computation, 1)
            collectives[kind]['bytes'] += size * times.get(computation, 1)
    return dict(
        hlo_instructions=sum(len(instructions) for instructions in computations.values()),
        hlo_unfused_instructions=sum(len(i) for c, i in computations.items() if c not in fused),
        hlo_computations=len(computations),
        counts=counts,
        collectives=collectives,
        other_collective_opcodes=sorted(other),
    )
