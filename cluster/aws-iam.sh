#!/usr/bin/env bash
# Create the IAM pieces cluster/aws.yaml names, once per AWS account (idempotent: what exists is kept).
#
#   MUSICGEN_BUCKET=my-bucket cluster/aws-iam.sh
#
# Runs the AWS CLI with your own (admin) credentials; nothing is written to disk. It creates:
#   policy  musicgen-bucket        read/write on s3://$MUSICGEN_BUCKET (also for EKS/IRSA, see README)
#   role + instance profile  musicgen-ray-worker   musicgen-bucket + ECR read-only
#   role + instance profile  musicgen-ray-head     the same + EC2 (launch/terminate workers),
#                                                  iam:PassRole on musicgen-ray-worker, and
#                                                  ssm:GetParameters for the AMI's SSM parameter
set -euo pipefail

bucket=${MUSICGEN_BUCKET:?set MUSICGEN_BUCKET to the S3 bucket for data and runs}
bucket=${bucket#s3://}
bucket=${bucket%%/*}
account=$(aws sts get-caller-identity --query Account --output text)
policy_arn="arn:aws:iam::${account}:policy/musicgen-bucket"

exists() { "$@" >/dev/null 2>&1; }

if exists aws iam get-policy --policy-arn "$policy_arn"; then
  echo "policy musicgen-bucket exists (kept; delete it to change the bucket)"
else
  aws iam create-policy --policy-name musicgen-bucket --policy-document "$(cat <<EOF
{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
   "Resource": "arn:aws:s3:::${bucket}"},
  {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
   "Resource": "arn:aws:s3:::${bucket}/*"}]}
EOF
)" >/dev/null
  echo "policy musicgen-bucket created for s3://${bucket}"
fi

ec2_trust='{"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
  "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}'

for name in musicgen-ray-worker musicgen-ray-head; do
  if ! exists aws iam get-role --role-name "$name"; then
    aws iam create-role --role-name "$name" --assume-role-policy-document "$ec2_trust" >/dev/null
    echo "role $name created"
  fi
  for arn in "$policy_arn" arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly; do
    aws iam attach-role-policy --role-name "$name" --policy-arn "$arn"
  done
  if ! exists aws iam get-instance-profile --instance-profile-name "$name"; then
    aws iam create-instance-profile --instance-profile-name "$name" >/dev/null
    aws iam add-role-to-instance-profile --instance-profile-name "$name" --role-name "$name"
    echo "instance profile $name created"
  fi
done

# The head runs Ray's autoscaler: it starts and stops the GPU workers with their profile.
aws iam attach-role-policy --role-name musicgen-ray-head --policy-arn arn:aws:iam::aws:policy/AmazonEC2FullAccess
aws iam put-role-policy --role-name musicgen-ray-head --policy-name musicgen-ray-launch --policy-document "$(cat <<EOF
{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::${account}:role/musicgen-ray-worker"},
  {"Effect": "Allow", "Action": "ssm:GetParameters",
   "Resource": "arn:aws:ssm:*::parameter/aws/service/deeplearning/*"}]}
EOF
)"
echo "done: instance profiles musicgen-ray-head and musicgen-ray-worker; bucket policy $policy_arn"
