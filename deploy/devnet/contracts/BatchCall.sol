// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title BatchCall: the `aggregate3` subset of Multicall3, for the x402-gateway dev chain.
/// @notice Placed with `anvil_setCode` at Multicall3's canonical address
/// (0xcA11bde05977b3631167028862bE2a173976CA11) so that the settler speaks to the dev chain
/// exactly as it speaks to a public chain, where the real Multicall3 lives at that address.
contract BatchCall {
    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }

    struct Result {
        bool success;
        bytes returnData;
    }

    function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory returnData) {
        uint256 length = calls.length;
        returnData = new Result[](length);
        for (uint256 i = 0; i < length; i++) {
            Call3 calldata call = calls[i];
            (bool success, bytes memory ret) = call.target.call(call.callData);
            if (!success && !call.allowFailure) {
                revert("Multicall3: call failed");
            }
            returnData[i] = Result(success, ret);
        }
    }

    function getBlockNumber() external view returns (uint256) {
        return block.number;
    }

    function getCurrentBlockTimestamp() external view returns (uint256) {
        return block.timestamp;
    }
}
