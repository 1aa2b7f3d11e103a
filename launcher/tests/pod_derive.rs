//! dos's re-exported `Pod`/`Zeroable` derives in a crate that does not depend
//! on bytemuck (this one depends on dos only): with
//! `#[bytemuck(crate = "dos::bytemuck")]` they compile and the type travels
//! in messages (issue 15: `#[derive(dos::Pod)]` alone asked for a bytemuck
//! dependency). This file compiling is most of the test.

#[derive(Clone, Copy, Debug, PartialEq, dos::Pod, dos::Zeroable)]
#[bytemuck(crate = "dos::bytemuck")]
#[repr(C)]
struct Particle {
    pos: [f64; 3],
    id: u64,
}

#[test]
fn a_derived_pod_type_travels_without_a_bytemuck_dependency() {
    let got = dos::testing::run_threads(2, |w| {
        let mine = [Particle {
            pos: [w.rank() as f64; 3],
            id: w.rank() as u64,
        }];
        let mut theirs = [<Particle as dos::Zeroable>::zeroed()];
        let other = 1 - w.rank();
        w.sendrecv(&mine, other, 0, &mut theirs, other, 0).unwrap();
        theirs[0]
    });
    assert_eq!(got[0].id, 1);
    assert_eq!(got[1].pos, [0.0; 3]);
}
