"""benchmarks/hlo.py reads the optimized HLO the TPU compiler prints: a hand-written module with a scanned loop
(trip count from the condition's bound, as the TPU compiler leaves it), an async all-gather inside it, and an
all-reduce outside, checks the counts and bytes per step."""

from benchmarks import hlo

MODULE = """
HloModule step

%cond (p: (s32[], f32[8,4])) -> pred[] {
  %p = (s32[], f32[8,4]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %bound = s32[] constant(6)
  ROOT %lt = pred[] compare(%i, %bound), direction=LT
}

%body (p: (s32[], f32[8,4])) -> (s32[], f32[8,4]) {
  %p = (s32[], f32[8,4]{1,0}) parameter(0)
  %x = f32[8,4]{1,0} get-tuple-element(%p), index=1
  %shard = f32[2,4]{1,0} slice(%x), slice={[0:2], [0:4]}
  %ag-start = (f32[2,4]{1,0}, f32[8,4]{1,0}) all-gather-start(%shard), dimensions={0}
  %ag-done = f32[8,4]{1,0} all-gather-done(%ag-start)
  %w = bf16[4,4]{1,0} constant({...})
  %y = f32[8,4]{1,0} dot(%ag-done, %x), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %t = (s32[], f32[8,4]{1,0}) tuple(%i, %y)
}

ENTRY %main (a: f32[8,4]) -> f32[8,4] {
  %a = f32[8,4]{1,0} parameter(0)
  %zero = s32[] constant(0)
  %init = (s32[], f32[8,4]{1,0}) tuple(%zero, %a)
  %loop = (s32[], f32[8,4]{1,0}) while(%init), condition=%cond, body=%body
  %out = f32[8,4]{1,0} get-tuple-element(%loop), index=1
  ROOT %sum = f32[8,4]{1,0} all-reduce(%out), replica_groups={}, to_apply=%add
}
"""


def test_the_hlo_reader_counts_collectives_per_step_through_loops():
    computations, entry = hlo.parse_hlo(MODULE)
    assert entry == 'main' and set(computations) == {'cond', 'body', 'main'}
    # the body runs its trip count per step; the condition and the reduction are counted per call site
    assert hlo.multipliers(computations, entry) == {'main': 1, 'cond': 1, 'body': 6, 'add': 1}
    analysed = hlo.analyse_hlo(MODULE)
    # the all-gather runs once per trip (6) and moves the whole (8, 4) float32 tensor each time
    assert analysed['collectives']['all-gather'] == dict(count=6, bytes=6 * 8 * 4 * 4)
    assert analysed['collectives']['all-reduce'] == dict(count=1, bytes=8 * 4 * 4)
    assert analysed['counts']['while_loops'] == 1 and analysed['counts']['dot'] == 1
    assert analysed['counts']['f32_dot'] == 1


def test_type_bytes_sums_tuples_and_sub_byte_types():
    assert hlo.type_bytes('(f32[2,3]{1,0}, bf16[4], s4[8])') == 2 * 3 * 4 + 4 * 2 + 8 * 0.5
    assert hlo.type_bytes('pred[]') == 1
