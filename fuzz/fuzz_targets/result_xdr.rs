//! Fuzz target: the result-code mapping of `horizon::result_codes` / `operation_code` over
//! transaction results decoded from arbitrary XDR bytes (as Horizon's `result_xdr` carries
//! them) and over structurally generated results. It must never panic, must name every
//! operation of a (fee-bump inner) success or failure, and must use Horizon's prefixes.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use payoutd_stellar::horizon::{operation_code, result_codes};
use stellar_xdr::{
    InnerTransactionResultResult, Limits, OperationResult, ReadXdr, TransactionResult,
    TransactionResultResult, WriteXdr,
};

/// The same nesting bound the Horizon client decodes with.
const XDR_DEPTH_MAX: u32 = 200;

fn operations(result: &TransactionResultResult) -> Option<Vec<OperationResult>> {
    match result {
        TransactionResultResult::TxSuccess(ops) | TransactionResultResult::TxFailed(ops) => {
            Some(ops.to_vec())
        }
        TransactionResultResult::TxFeeBumpInnerSuccess(pair)
        | TransactionResultResult::TxFeeBumpInnerFailed(pair) => match &pair.result.result {
            InnerTransactionResultResult::TxSuccess(ops)
            | InnerTransactionResultResult::TxFailed(ops) => Some(ops.to_vec()),
            _ => Some(Vec::new()),
        },
        _ => None,
    }
}

fn check(result: &TransactionResult) {
    let (tx_code, op_codes) = result_codes(&result.result);
    assert!(tx_code.starts_with("tx_") && tx_code.len() > 3, "{tx_code}");
    let failed = matches!(
        result.result,
        TransactionResultResult::TxFailed(_) | TransactionResultResult::TxFeeBumpInnerFailed(_)
    );
    assert_eq!(
        failed,
        tx_code == "tx_failed" || tx_code == "tx_fee_bump_inner_failed"
    );
    match operations(&result.result) {
        Some(ops) => {
            assert_eq!(op_codes.len(), ops.len());
            for (op, code) in ops.iter().zip(&op_codes) {
                assert_eq!(operation_code(op), code);
                assert!(code.starts_with("op_"), "{code}");
            }
        }
        None => assert!(op_codes.is_empty()),
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        depth: XDR_DEPTH_MAX,
        len: data.len(),
    };
    // As Horizon sends it: bytes that may or may not be a TransactionResult.
    if let Ok(result) = TransactionResult::from_xdr(data, limits.clone()) {
        check(&result);
        let bytes = result
            .to_xdr(Limits::none())
            .expect("a decoded value encodes");
        assert_eq!(bytes, data, "decode→encode gives the input back");
    }
    // A structurally valid result built from the same bytes.
    let mut u = Unstructured::new(data);
    if let Ok(result) = TransactionResult::arbitrary(&mut u) {
        check(&result);
        if let Ok(b64) = result.to_xdr_base64(Limits::none()) {
            let limits = Limits {
                depth: XDR_DEPTH_MAX,
                len: b64.len(),
            };
            let back = TransactionResult::from_xdr_base64(&b64, limits).expect("round trip");
            assert_eq!(back, result);
        }
    }
});
