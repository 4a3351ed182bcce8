//! Result codes: Horizon's names for them and the `TransactionResult` XDR that carries them.

use stellar_xdr::{
    ClaimClaimableBalanceResult, CreateAccountResult, CreateClaimableBalanceResult, Limits,
    OperationResult, OperationResultTr, PaymentResult, TransactionResult, TransactionResultExt,
    TransactionResultResult, VecM, WriteXdr,
};

/// Horizon's name of a transaction result code (`extras.result_codes.transaction`).
pub fn tx_code_name(r: &TransactionResultResult) -> &'static str {
    use TransactionResultResult as R;
    match r {
        R::TxFeeBumpInnerSuccess(_) => "tx_fee_bump_inner_success",
        R::TxFeeBumpInnerFailed(_) => "tx_fee_bump_inner_failed",
        R::TxSuccess(_) => "tx_success",
        R::TxFailed(_) => "tx_failed",
        R::TxTooEarly => "tx_too_early",
        R::TxTooLate => "tx_too_late",
        R::TxMissingOperation => "tx_missing_operation",
        R::TxBadSeq => "tx_bad_seq",
        R::TxBadAuth => "tx_bad_auth",
        R::TxInsufficientBalance => "tx_insufficient_balance",
        R::TxNoAccount => "tx_no_source_account",
        R::TxInsufficientFee => "tx_insufficient_fee",
        R::TxBadAuthExtra => "tx_bad_auth_extra",
        R::TxInternalError => "tx_internal_error",
        R::TxNotSupported => "tx_not_supported",
        R::TxBadSponsorship => "tx_bad_sponsorship",
        R::TxBadMinSeqAgeOrGap => "tx_bad_minseq_age_or_gap",
        R::TxMalformed => "tx_malformed",
        R::TxSorobanInvalid => "tx_soroban_invalid",
        R::TxFrozenKeyAccessed => "tx_frozen_key_accessed",
    }
}

/// The payload-free transaction result for a Horizon code name, for `reject_next`.
pub fn tx_code_from_name(name: &str) -> Option<TransactionResultResult> {
    use TransactionResultResult as R;
    let all = [
        R::TxTooEarly,
        R::TxTooLate,
        R::TxMissingOperation,
        R::TxBadSeq,
        R::TxBadAuth,
        R::TxInsufficientBalance,
        R::TxNoAccount,
        R::TxInsufficientFee,
        R::TxBadAuthExtra,
        R::TxInternalError,
        R::TxNotSupported,
        R::TxBadSponsorship,
        R::TxBadMinSeqAgeOrGap,
        R::TxMalformed,
        R::TxSorobanInvalid,
    ];
    all.into_iter().find(|r| tx_code_name(r) == name)
}

/// Horizon's name of an operation result code (`extras.result_codes.operations[i]`).
pub fn op_code_name(r: &OperationResult) -> &'static str {
    match r {
        OperationResult::OpInner(OperationResultTr::Payment(p)) => payment_code_name(p),
        OperationResult::OpInner(OperationResultTr::CreateAccount(r)) => match r {
            CreateAccountResult::Success => "op_success",
            CreateAccountResult::Malformed => "op_malformed",
            CreateAccountResult::Underfunded => "op_underfunded",
            CreateAccountResult::LowReserve => "op_low_reserve",
            CreateAccountResult::AlreadyExist => "op_already_exists",
        },
        OperationResult::OpInner(OperationResultTr::CreateClaimableBalance(r)) => match r {
            CreateClaimableBalanceResult::Success(_) => "op_success",
            CreateClaimableBalanceResult::Malformed => "op_malformed",
            CreateClaimableBalanceResult::LowReserve => "op_low_reserve",
            CreateClaimableBalanceResult::NoTrust => "op_no_trust",
            CreateClaimableBalanceResult::NotAuthorized => "op_not_authorized",
            CreateClaimableBalanceResult::Underfunded => "op_underfunded",
        },
        OperationResult::OpInner(OperationResultTr::ClaimClaimableBalance(r)) => match r {
            ClaimClaimableBalanceResult::Success => "op_success",
            ClaimClaimableBalanceResult::DoesNotExist => "op_does_not_exist",
            ClaimClaimableBalanceResult::CannotClaim => "op_cannot_claim",
            ClaimClaimableBalanceResult::LineFull => "op_line_full",
            ClaimClaimableBalanceResult::NoTrust => "op_no_trust",
            ClaimClaimableBalanceResult::NotAuthorized => "op_not_authorized",
            // Trustlines are never frozen here; the name follows the pattern of the others.
            ClaimClaimableBalanceResult::TrustlineFrozen => "op_trustline_frozen",
        },
        // Every other operation is rejected as unsupported before it could produce a result.
        OperationResult::OpInner(_) => "op_success",
        OperationResult::OpBadAuth => "op_bad_auth",
        OperationResult::OpNoAccount => "op_no_source_account",
        OperationResult::OpNotSupported => "op_not_supported",
        OperationResult::OpTooManySubentries => "op_too_many_subentries",
        OperationResult::OpExceededWorkLimit => "op_exceeded_work_limit",
        OperationResult::OpTooManySponsoring => "op_too_many_sponsoring",
    }
}

fn payment_code_name(p: &PaymentResult) -> &'static str {
    match p {
        PaymentResult::Success => "op_success",
        PaymentResult::Malformed => "op_malformed",
        PaymentResult::Underfunded => "op_underfunded",
        PaymentResult::SrcNoTrust => "op_src_no_trust",
        PaymentResult::SrcNotAuthorized => "op_src_not_authorized",
        PaymentResult::NoDestination => "op_no_destination",
        PaymentResult::NoTrust => "op_no_trust",
        PaymentResult::NotAuthorized => "op_not_authorized",
        PaymentResult::LineFull => "op_line_full",
        PaymentResult::NoIssuer => "op_no_issuer",
    }
}

/// A payment operation's result.
pub fn payment_result(p: PaymentResult) -> OperationResult {
    OperationResult::OpInner(OperationResultTr::Payment(p))
}

pub fn create_account_result(r: CreateAccountResult) -> OperationResult {
    OperationResult::OpInner(OperationResultTr::CreateAccount(r))
}

pub fn create_claimable_balance_result(r: CreateClaimableBalanceResult) -> OperationResult {
    OperationResult::OpInner(OperationResultTr::CreateClaimableBalance(r))
}

pub fn claim_claimable_balance_result(r: ClaimClaimableBalanceResult) -> OperationResult {
    OperationResult::OpInner(OperationResultTr::ClaimClaimableBalance(r))
}

/// Whether an operation result is a success.
pub fn op_succeeded(r: &OperationResult) -> bool {
    matches!(
        r,
        OperationResult::OpInner(
            OperationResultTr::Payment(PaymentResult::Success)
                | OperationResultTr::CreateAccount(CreateAccountResult::Success)
                | OperationResultTr::CreateClaimableBalance(CreateClaimableBalanceResult::Success(
                    _
                ))
                | OperationResultTr::ClaimClaimableBalance(ClaimClaimableBalanceResult::Success)
        )
    )
}

/// The transaction's result codes as Horizon shows them.
pub fn result_codes(r: &TransactionResultResult) -> (String, Vec<String>) {
    let ops = match r {
        TransactionResultResult::TxSuccess(ops) | TransactionResultResult::TxFailed(ops) => {
            ops.iter().map(|o| op_code_name(o).to_owned()).collect()
        }
        _ => Vec::new(),
    };
    (tx_code_name(r).to_owned(), ops)
}

/// Builds `TxSuccess`/`TxFailed` from per-operation results.
pub fn ops_result(results: Vec<OperationResult>, all_ok: bool) -> TransactionResultResult {
    // MAX_OPS_PER_TX bounds the operations of a decoded transaction, and this vector has one
    // entry per operation, so it always fits; the fallback is unreachable.
    let ops: VecM<OperationResult> = results.try_into().unwrap_or_default();
    if all_ok {
        TransactionResultResult::TxSuccess(ops)
    } else {
        TransactionResultResult::TxFailed(ops)
    }
}

/// The base64 `TransactionResult` XDR for a result and fee.
pub fn result_xdr(fee_charged: i64, result: TransactionResultResult) -> String {
    let tr = TransactionResult {
        fee_charged,
        result,
        ext: TransactionResultExt::V0,
    };
    // Writing a well-formed in-memory value to a growable buffer without limits cannot fail.
    tr.to_xdr_base64(Limits::none()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::ReadXdr;

    #[test]
    fn rejection_result_xdr_matches_horizon_examples() {
        // Horizon shows tx_bad_seq with fee 100 as this exact string.
        assert_eq!(
            result_xdr(100, TransactionResultResult::TxBadSeq),
            "AAAAAAAAAGT////7AAAAAA=="
        );
        let failed = ops_result(vec![payment_result(PaymentResult::NoDestination)], false);
        let b64 = result_xdr(100, failed.clone());
        let back = TransactionResult::from_xdr_base64(b64, Limits::none()).expect("decodes");
        assert_eq!(back.result, failed);
        assert_eq!(
            result_codes(&failed),
            ("tx_failed".to_owned(), vec!["op_no_destination".to_owned()])
        );
    }

    #[test]
    fn new_operation_codes_have_horizon_names() {
        let id =
            stellar_xdr::ClaimableBalanceId::ClaimableBalanceIdTypeV0(stellar_xdr::Hash([1; 32]));
        for (r, name, ok) in [
            (
                create_account_result(CreateAccountResult::Success),
                "op_success",
                true,
            ),
            (
                create_account_result(CreateAccountResult::AlreadyExist),
                "op_already_exists",
                false,
            ),
            (
                create_account_result(CreateAccountResult::LowReserve),
                "op_low_reserve",
                false,
            ),
            (
                create_account_result(CreateAccountResult::Underfunded),
                "op_underfunded",
                false,
            ),
            (
                create_claimable_balance_result(CreateClaimableBalanceResult::Success(id)),
                "op_success",
                true,
            ),
            (
                create_claimable_balance_result(CreateClaimableBalanceResult::LowReserve),
                "op_low_reserve",
                false,
            ),
            (
                claim_claimable_balance_result(ClaimClaimableBalanceResult::CannotClaim),
                "op_cannot_claim",
                false,
            ),
            (
                claim_claimable_balance_result(ClaimClaimableBalanceResult::Success),
                "op_success",
                true,
            ),
        ] {
            assert_eq!(op_code_name(&r), name);
            assert_eq!(op_succeeded(&r), ok, "{name}");
        }
    }

    #[test]
    fn reject_codes_round_trip() {
        for name in [
            "tx_insufficient_fee",
            "tx_bad_seq",
            "tx_too_late",
            "tx_bad_auth",
            "tx_no_source_account",
        ] {
            let r = tx_code_from_name(name).expect("known code");
            assert_eq!(tx_code_name(&r), name);
        }
        assert!(tx_code_from_name("tx_failed").is_none());
        assert!(tx_code_from_name("nonsense").is_none());
    }
}
